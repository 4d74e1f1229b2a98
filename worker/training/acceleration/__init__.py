"""Loraboard's fast path for QLoRA fine-tuning on one GPU: one module per feature.

The worker's trainer builds the classic recipe (docs/parameters.md), asks the planner
(core/acceleration_plan.py, a pure function) which features apply on the device at hand,
and hands the plan to `Acceleration`, which carries it out at three points: the base
model loaded, the adapters made, the trainer built. The reference path never imports
this package. The figures behind each feature: docs/performance.md, one section each.

Why a fast path: at batch 4 a 7B QLoRA step needs far less arithmetic than the time the
recipe takes; the rest is the host, launching thousands of small kernels from Python and
waiting for the GPU. Default features (leave one off with disable={...}):

- "sdpa" (sdpa.py): attention through PyTorch's flash / memory-efficient SDPA kernels, the
  cuDNN backend off: on Hopper cuDNN attention costs milliseconds of host time a call and
  builds a new graph for every new sequence length, and group_by_length makes new lengths
  all the time.
- "bf16" (planner only): a bfloat16 model and 4-bit compute dtype (compute capability 8.0
  and up): one dtype end to end, no autocast, no fp16 overflow. It replaces a 16-bit float
  only: a run that asks for float32 compute keeps float32.
- "liger" (liger.py): Liger's Triton kernels for RMSNorm, RoPE and SwiGLU, forward and
  backward, one kernel each instead of several eager ops. Left off where "compile"
  applies: the compiled layers fuse the same operations themselves.
- "compile" (compile.py): torch.compile of each decoder layer, the activations recomputed
  inside the compiled backward instead of transformers' checkpoint, LoRA's dropout made
  recomputable (seeded_dropout.py). For bfloat16 models from COMPILE_MIN_HIDDEN_SIZE up:
  compiling costs the first step up to a minute (Inductor's cache keeps the result for the
  next run of the same shape). A compile that fails before the first log trains again
  without it (compile.retry_without).
- "dequant" (dequant.py): with "compile", the 4-bit weights dequantized by torch ops inside
  the compiled layers, bit-identical to bitsandbytes, instead of a bitsandbytes custom op
  (Python dispatch) per matmul.
- "async" (async_steps.py; "async" is a Python keyword): steps that never wait for the GPU,
  so that the host queues the next step while the GPU runs this one: no host check of the
  padding (padding_mask.py), trl's metrics and transformers' token count read at log steps
  only (unread_metrics.py), bitsandbytes' optimizer without its per-tensor synchronizes
  and with one update for all adapters (queued_optimizer.py), the batch copied without a
  wait, the NaN/inf filter run on the GPU.
- "flash" (padding_mask.py): with "async", right-padded batches attended by SDPA's causal
  flash kernel without a mask: every real token attends to the same tokens; the
  memory-efficient kernel a mask needs scores the masked half too.

Opt-in features (enable={...}): each breaks one of the recipe's promises or costs more than
it gives on a typical run, so the worker turns them on only when asked.

- "cpp-wrapper" (compile.py): with "compile", Inductor's generated code that runs each graph
  is C++ instead of Python: a little less host time a step, for g++ compiling each graph's
  wrapper at the first step, which a run of a few hundred steps never earns back.
- "optimizer" (optimizer.py): torch's fused AdamW on fp32 adapters instead of
  paged_adamw_32bit: one kernel a step instead of one update and one synchronize per
  tensor, for more allocated memory (fp32 adapters and unpaged state).
- "offload" (planner only): trl's activation offloading of the checkpointed layer inputs
  to pinned host memory: less GPU memory, slower steps.
- "dequant-kernel" (dequant_kernel.py): with "dequant", Loraboard's own Triton kernel
  instead of Inductor's from the torch ops; bit-identical, its gain within the spread.

The copied internals of trl and bitsandbytes are guarded by version (versions.py): a
worker with other versions says so at the start instead of training differently.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from core.acceleration_plan import AccelerationPlan
from core.acceleration_plan import plan_acceleration as plan_features


class Acceleration(AccelerationPlan):
    """A plan, carried out: patches at the three points of building a run's trainer."""

    @classmethod
    def from_plan(cls, plan: AccelerationPlan) -> Acceleration:
        return cls(**{item.name: getattr(plan, item.name) for item in fields(plan)})

    def prepare_model(self, model: Any) -> Any:
        """In-place patches after the base model is loaded, before LoRA wraps it. Returns the model."""
        if self.no_cudnn_attention:
            from worker.training.acceleration.sdpa import turn_off_cudnn_attention

            turn_off_cudnn_attention()
        if self.asynchronous_steps:
            from worker.training.acceleration.padding_mask import use_mask_without_host_checks

            use_mask_without_host_checks(model)
        if self.liger:
            from worker.training.acceleration.liger import apply_liger_kernels

            apply_liger_kernels(model)
        if self.compile_layers:
            from worker.training.acceleration.compile import compile_decoder_layers

            compile_decoder_layers(
                model,
                recompute=self.recompute_in_graph,
                dequantize_in_graph=self.dequantize_in_graph,
                dequantize_kernel=self.dequantize_kernel,
                cpp_wrapper=self.cpp_wrapper,
            )
        return model

    def prepare_adapters(self, model: Any) -> Any:
        """Patches once peft has made the adapters, before training. Returns the model."""
        if self.recompute_in_graph:
            from worker.training.acceleration.seeded_dropout import use_seeded_dropout

            # The compiled backward recomputes LoRA's dropout: its mask must come out the same.
            use_seeded_dropout(model)
        return model

    def prepare_training(self, trainer: Any) -> Any:
        """Patches after the trainer is built and before trainer.train(). Returns the trainer."""
        if self.asynchronous_steps:
            from worker.training.acceleration.async_steps import train_without_waiting

            train_without_waiting(trainer, causal_right_padding=self.causal_attention_for_right_padding)
        if self.fp32_adapters:
            from worker.training.acceleration.optimizer import keep_adapters_in_float32

            keep_adapters_in_float32(trainer.model)
        return trainer


def plan_acceleration(*args: Any, **kwargs: Any) -> Acceleration:
    """The planner's decision for this process's device, ready to carry out (same arguments
    as core.acceleration_plan.plan_acceleration). Raises CopiedInternalsMismatch before
    anything is loaded when a feature it turns on copies another release of a library."""
    from worker.training.acceleration.versions import check_copied_internals

    acceleration = Acceleration.from_plan(plan_features(*args, **kwargs))
    check_copied_internals(acceleration)
    return acceleration
