"""Loraboard's fast path for QLoRA fine-tuning on one GPU.

The worker's trainer builds the classic recipe (PARAMETERS.md) and then asks
`plan_acceleration(...)` which overrides make it faster on the device at hand.
bench/throughput.py trains through this same trainer (run_training), so the figures in
bench/RESULTS.md are the figures of what the worker runs.

Why these overrides (measured on H100s, bench/RESULTS.md). At batch 4 (about 1,300
real tokens a step) a 7B QLoRA step needs about 70 ms of arithmetic; the recipe
takes 740-830 ms, of which the GPU is busy about 210 ms. The rest is the CPU:
launching ~15,000 small kernels from Python, and, above all, cuDNN attention.

Default features (each can be left off with disable={...}):

- "sdpa": attention through PyTorch's flash / memory-efficient SDPA kernels, with
  the cuDNN SDPA backend turned off. On Hopper torch 2.11 picks cuDNN attention,
  which costs ~2.7 ms of CPU per call (270 ms a step) and builds a new cuDNN
  graph, 3 s, for each new sequence length; group_by_length batches have new
  lengths all the time. The largest single gain: 0.60 -> 0.36 s a step
  (measured with the "optimizer" feature on).
- "bf16": bfloat16 model and 4-bit compute dtype (compute capability >= 8.0): one
  dtype end to end (trl keeps QLoRA adapters in bf16), no autocast. No fp16
  overflow either. It replaces a 16-bit float only: a run that asks for float32
  compute (the demo preset) keeps float32, so both trainers train at the precision
  the run chose.
- "liger": Liger's Triton kernels for RMSNorm, RoPE and SwiGLU: one kernel each
  instead of 5-10 eager ops, forward and backward, and less activation memory
  (-0.23 GiB at peak). trl already has its own chunked LM head. Left off where
  "compile" applies: the compiled layers fuse the same operations themselves.
- "compile": torch.compile of each decoder layer, with the activations recomputed
  inside the compiled backward instead of transformers' checkpoint
  (worker/training/compiled_layers.py) and LoRA's dropout made recomputable
  (worker/training/seeded_dropout.py): 0.41 -> 0.25 s a step and 3.2x the
  reference's tokens/s on the 7B workload, at 5.75 against 5.92 GiB peak (measured
  before the seeded dropout, with torch's philox dropout; with it, 2.8x-4.2x on
  H200s). Only for bfloat16 models with hidden size >= COMPILE_MIN_HIDDEN_SIZE:
  compiling takes up to a minute. Inductor's pointwise autotuning and the generated
  code's asserts are off (compiled_layers.use_lean_generated_code).
- "cpp-wrapper": with "compile", the code Inductor generates to run each compiled graph
  (its allocations, kernel launches and matmul calls) is C++ instead of Python. On hosts
  where the step waits on the host, not the GPU, that shortens the step
  (docs/performance.md), at the cost of about a minute more of compiling at the first
  steps (g++ compiles each graph's wrapper; Inductor's cache keeps it for the next run of
  the same model shape, see the Dockerfile's TORCHINDUCTOR_CACHE_DIR). Where g++ fails,
  the worker retries with Python wrappers.
- "dequant": with "compile", every 4-bit weight is dequantized by torch ops inside the
  compiled layers (worker/training/graph_dequantization.py), bit-identical to
  bitsandbytes, instead of a bitsandbytes custom op (Python dispatch, ~50 us of CPU)
  per matmul, 640 calls a step on the 7B workload; the input gradients' after their
  gradient, so that their 16-bit weights do not live through the recompute. Faster and
  no larger at the peak than the recipe, though Inductor's generated kernels are slower
  than bitsandbytes' own standalone (figures: docs/performance.md).

- "async": steps that do not wait for the GPU, so that the host queues the next step's
  kernels while the GPU still runs this one's backward. The classic recipe's step waits
  for the GPU about 135 times (counted from the code): the batch's copy to the device,
  transformers' check for padding before the SDPA mask (worker/training/padding_mask.py),
  trl's metrics read with .item() and transformers' token count
  (worker/training/unread_metrics.py: read at log steps instead), the training loop's
  NaN/inf check of every loss, and one
  synchronize after each of bitsandbytes' 128 per-tensor updates
  (worker/training/queued_optimizer.py, which also makes the 128 updates one), and trl's
  fused LM head selecting the labelled positions (it scores every position instead). No
  wait is left within a step. The same arithmetic and the same logs (the NaN/inf filter
  runs on the GPU), at the same peak allocated memory (docs/performance.md).

- "flash": with "async", a batch whose rows are padded at their ends (checked on the host
  from the collated CPU batch: every trl SFT batch without packing) is attended with
  SDPA's causal flash kernel and no mask (worker/training/padding_mask.py). A real token
  attends to the same tokens either way; the padding's own outputs, which nothing reads,
  differ. The memory-efficient kernel that a mask needs computes every score, the masked
  half included, which is the time this saves (docs/performance.md).

Opt-in features (enable={...}): faster or leaner, but each breaks one of the
recipe's promises, so the worker turns them on only when asked.

- "optimizer": torch's fused AdamW on fp32 adapters instead of bitsandbytes'
  paged_adamw_32bit (which launches one update and one device synchronize per
  tensor, 128 of each a step, on CUDA managed memory): 0.44 -> 0.36 s a step,
  but +0.38 GiB of peak *allocated* memory (the paged optimizer's 0.25 GiB of
  state is managed memory, invisible to torch's allocator statistics, and the
  adapters and their gradients double in size).
- "offload": trl's activation offloading (checkpointed layer inputs to pinned
  host memory): -0.44 GiB at peak but +0.09 s a step (measured with "optimizer").
- "dequant-kernel": with "dequant", the weights dequantized by Loraboard's own Triton
  kernel (worker/training/dequantization_kernel.py) instead of Inductor's kernel from
  the torch ops. Bit-identical to bitsandbytes on an H200; its gain was within the
  spread and its peak above the recipe's (docs/performance.md): opt-in until both improve.

On CPU (and on GPUs without CUDA) the plan is empty: training runs as configured.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

DEFAULT_FEATURES = frozenset({"sdpa", "bf16", "liger", "compile", "cpp-wrapper", "dequant", "async", "flash"})
OPTIONAL_FEATURES = frozenset({"optimizer", "offload", "dequant-kernel"})

# torch.compile costs about a minute on the first steps (80 s for the 7B shape on an
# H100 host): worth it where a step is long, not for the demo's tiny model, whose
# whole run takes less. Hidden size 2048 and up: the 1B-parameter class and larger.
COMPILE_MIN_HIDDEN_SIZE = 2048

# torch's fused AdamW: one multi-tensor kernel for every adapter tensor. Its state
# has the parameters' dtype, so prepare_trainer keeps the adapters in fp32 (trl
# casts QLoRA adapters to bf16, and Adam's second moment with beta2 = 0.999 moves
# by 0.1% a step, below bf16's 0.4% resolution: it would stop tracking).
FUSED_OPTIMIZER = "adamw_torch_fused"


@dataclass
class Acceleration:
    """Overrides on top of the run's own configuration, and the reasons for them."""

    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra kwargs for AutoModelForCausalLM.from_pretrained (dtype, attn_implementation)."""
    quantization_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides for BitsAndBytesConfig kwargs (bnb_4bit_compute_dtype)."""
    sft_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides for trl SFTConfig kwargs (bf16/fp16, optim, activation_offloading)."""
    notes: list[str] = field(default_factory=list)
    """Human-readable lines: what was turned on and why (recorded on the run)."""
    liger: bool = False
    """Patch RMSNorm, RoPE and SwiGLU with Liger's Triton kernels in prepare_model."""
    no_cudnn_attention: bool = False
    """Turn off PyTorch's cuDNN SDPA backend (process-wide) in prepare_model."""
    fp32_adapters: bool = False
    """Cast the trainable (adapter) parameters back to fp32 in prepare_trainer."""
    compile_layers: bool = False
    """torch.compile each decoder layer (lazily: traced at the first step, after LoRA wraps it)."""
    recompute_in_graph: bool = False
    """With compile_layers: the compiled graph recomputes activations instead of transformers' checkpoint."""
    cpp_wrapper: bool = False
    """With compile_layers: Inductor's C++ wrapper runs each compiled graph."""
    dequantize_in_graph: bool = False
    """With compile_layers: 4-bit weights dequantized by torch ops the compiled graph fuses."""
    dequantize_kernel: bool = False
    """With dequantize_in_graph: by Loraboard's Triton kernel where it applies."""
    asynchronous_steps: bool = False
    """No waits for the GPU within a step: SDPA mask, trl's metrics, bitsandbytes' optimizer."""
    causal_attention_for_right_padding: bool = False
    """With asynchronous_steps: right-padded batches attended causally, with no mask."""

    def prepare_model(self, model: Any) -> Any:
        """In-place patches after the base model is loaded, before LoRA wraps it. Returns the model."""
        if self.no_cudnn_attention:
            import torch

            # Process-wide: a worker process runs one training at a time. SDPA then
            # picks flash attention (no mask) or memory-efficient attention (mask).
            torch.backends.cuda.enable_cudnn_sdp(False)
        if self.asynchronous_steps:
            from worker.training.padding_mask import use_mask_without_host_checks

            use_mask_without_host_checks(model)
        if self.liger:
            # Imported here: liger_kernel (and triton) exist only on GPU machines.
            from liger_kernel.transformers import _apply_liger_kernel_to_instance

            # cross_entropy / fused_linear_cross_entropy stay off: trl's SFTTrainer
            # replaces the LM head with its own chunked log-prob head, and Liger's
            # would replace model.forward underneath it.
            _apply_liger_kernel_to_instance(
                model=model,
                rms_norm=True,
                rope=True,
                swiglu=True,
                cross_entropy=False,
                fused_linear_cross_entropy=False,
            )
        if self.compile_layers:
            from worker.training.compiled_layers import compile_decoder_layers

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
            from worker.training.seeded_dropout import use_seeded_dropout

            # The compiled backward recomputes LoRA's dropout: its mask must come out the same.
            use_seeded_dropout(model)
        return model

    def prepare_trainer(self, trainer: Any) -> Any:
        """prepare_adapters, then prepare_training: for callers that let trl make the adapters
        (the benchmark). Returns the trainer."""
        self.prepare_adapters(trainer.model)
        return self.prepare_training(trainer)

    def prepare_training(self, trainer: Any) -> Any:
        """Patches after the trainer is built and before trainer.train(). Returns the trainer."""
        if self.asynchronous_steps:
            from worker.training.queued_optimizer import queue_trainer_optimizer_updates
            from worker.training.unread_metrics import keep_metrics_on_device

            keep_metrics_on_device(trainer)
            trainer.attends_right_padding_causally = self.causal_attention_for_right_padding
            queue_trainer_optimizer_updates(trainer)
        if self.fp32_adapters:
            # trl's SFTTrainer casts QLoRA adapters to bf16 in __init__; the optimizer
            # is made in train(), so casting here gives it fp32 parameters and state.
            # peft casts the LoRA branch's input to the adapter dtype and the result back.
            import torch

            for param in trainer.model.parameters():
                if param.requires_grad and param.dtype != torch.float32:
                    param.data = param.data.float()
        return trainer


def _has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def plan_acceleration(
    device_type: str,
    compute_capability: tuple[int, int] | None,
    gradient_checkpointing: bool,
    packing: bool,
    *,
    hidden_size: int | None = None,
    compute_dtype: str | None = None,
    disable: frozenset[str] = frozenset(),
    enable: frozenset[str] = frozenset(),
) -> Acceleration:
    """Decide the fast path for one run.

    device_type: "cuda", "cpu", "mps", ... (torch.device(...).type).
    compute_capability: torch.cuda.get_device_capability() on CUDA, else None.
    gradient_checkpointing, packing: the run's own settings (kept as they are).
    hidden_size: the model's (config.hidden_size); torch.compile only pays off on large models.
    compute_dtype: the run's own ("float16", "bfloat16", "float32"); bfloat16 replaces a
        16-bit float only: a run that asks for float32 compute keeps its precision.
    disable: default features to leave off (DEFAULT_FEATURES), for ablations and as an escape hatch.
    enable: opt-in features to turn on (OPTIONAL_FEATURES).
    """
    unknown = (disable | enable) - DEFAULT_FEATURES - OPTIONAL_FEATURES
    if unknown:
        raise ValueError(f"unknown acceleration features: {sorted(unknown)}")
    features = (DEFAULT_FEATURES - disable) | enable

    plan = Acceleration()
    if device_type != "cuda" or compute_capability is None:
        plan.notes.append(f"acceleration: none on {device_type} (the fast path needs a CUDA GPU)")
        return plan

    import torch  # the worker has it; imported late so this module stays cheap to import

    cc = f"{compute_capability[0]}.{compute_capability[1]}"
    plan.model_kwargs["attn_implementation"] = "sdpa"
    if "sdpa" in features:
        plan.no_cudnn_attention = True
        plan.notes.append(
            "attention: PyTorch SDPA flash / memory-efficient kernels, cuDNN attention off "
            "(it rebuilds a cuDNN graph for every new sequence length)"
        )

    if "bf16" in features and compute_dtype == "float32":
        plan.notes.append("bfloat16 off: the run asks for float32 compute, and keeps it")
    elif "bf16" in features and compute_capability >= (8, 0):
        # Weights left in 16 bit (embeddings, norms, LM head), the matmul after
        # dequantizing, and trl's adapters all in bfloat16: mixed precision off.
        plan.model_kwargs["dtype"] = torch.bfloat16
        plan.quantization_kwargs["bnb_4bit_compute_dtype"] = torch.bfloat16
        plan.sft_kwargs.update(bf16=False, fp16=False)
        plan.notes.append(f"bfloat16 model and 4-bit compute dtype (compute capability {cc}): no autocast")
    elif "bf16" in features:
        plan.notes.append(f"bfloat16 off: compute capability {cc} < 8.0 has no bfloat16 matmul")

    if "compile" in features:
        if plan.model_kwargs.get("dtype") != torch.bfloat16:
            # Measured only on bfloat16 models; a float32 model with LoRA dropout failed
            # in Triton's compiler on an H200 ("PassManager::run failed", torch 2.11).
            plan.notes.append("torch.compile skipped: the compiled layers are for bfloat16 models")
        elif not _has_package("triton"):
            plan.notes.append("torch.compile skipped: triton is not installed")
        elif hidden_size is None or hidden_size < COMPILE_MIN_HIDDEN_SIZE:
            plan.notes.append(
                f"torch.compile skipped: hidden size {hidden_size} < {COMPILE_MIN_HIDDEN_SIZE} "
                "(a model this small trains in less time than compiling it takes)"
            )
        else:
            plan.compile_layers = True
            plan.recompute_in_graph = gradient_checkpointing
            plan.notes.append(
                "decoder layers compiled with torch.compile (fused kernels, fewer launches"
                + (", activations recomputed inside the compiled backward" if gradient_checkpointing else "")
                + "): the first steps take about a minute longer while it compiles"
            )
            if "cpp-wrapper" in features:
                plan.cpp_wrapper = True
                plan.notes.append(
                    "compiled graphs run by C++ wrappers (less host time per layer; g++ adds about "
                    "a minute of compiling at the first steps, cached for later runs)"
                )
            if "dequant" in features:
                plan.dequantize_in_graph = True
                plan.notes.append(
                    "4-bit weights dequantized inside the compiled layers (no bitsandbytes call per matmul)"
                )
                if "dequant-kernel" in features:
                    plan.dequantize_kernel = True
                    plan.notes.append("4-bit weights dequantized by Loraboard's Triton kernel")

    if "liger" in features and plan.compile_layers:
        plan.notes.append(
            "Liger kernels left off: the compiled layers fuse RMSNorm, RoPE and SwiGLU themselves"
        )
    elif "liger" in features:
        if _has_package("liger_kernel") and _has_package("triton"):
            plan.liger = True
            plan.notes.append("Liger Triton kernels for RMSNorm, RoPE and SwiGLU")
        else:
            plan.notes.append("Liger kernels skipped: liger_kernel (or triton) is not installed")

    if "optimizer" in features:
        plan.sft_kwargs["optim"] = FUSED_OPTIMIZER
        plan.fp32_adapters = True
        plan.notes.append(
            f"optimizer {FUSED_OPTIMIZER} on fp32 adapters: one fused kernel a step instead of "
            "paged_adamw_32bit's 128 updates and 128 device synchronizes (more allocated memory)"
        )

    if "offload" in features:
        if gradient_checkpointing:
            plan.sft_kwargs["activation_offloading"] = True
            plan.notes.append(
                "checkpointed layer inputs offloaded to pinned CPU memory (less GPU memory, slower)"
            )
        else:
            plan.notes.append("activation offloading skipped: it is meant for gradient checkpointing")

    if "async" in features:
        plan.asynchronous_steps = True
        plan.sft_kwargs.update(
            # The batch copied to the GPU from pinned memory without waiting for it.
            dataloader_pin_memory=True,
            accelerator_config={"non_blocking": True},
            # The loop's NaN/inf check reads every step's loss on the host; the same
            # filter runs on the GPU instead (unread_metrics).
            logging_nan_inf_filter=False,
        )
        plan.notes.append(
            "steps queued without waiting for the GPU (no per-step reads of the loss, metrics or "
            "padding; bitsandbytes' optimizer without its 128 synchronizes, one update for all adapters)"
        )

    if "flash" in features and plan.asynchronous_steps:
        plan.causal_attention_for_right_padding = True
        plan.notes.append(
            "right-padded batches attended causally by SDPA (its flash kernel in 16 bit), without a "
            "padding mask (the same attention for every real token)"
        )
    elif "flash" in features:
        plan.notes.append(
            "causal attention for right-padded batches off: it needs async's host-side batch check"
        )

    if packing:
        plan.notes.append("packing as configured")
    return plan
