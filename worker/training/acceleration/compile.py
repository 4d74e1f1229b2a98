"""Loraboard's compiled decoder layers: the "compile" feature of acceleration.py.

At batch 4 the classic recipe's 7B QLoRA step is launch-bound: the CPU issues ~9,000
small kernels through Python while the GPU waits (bench/RESULTS.md). Compiling each decoder layer
with torch.compile fuses the elementwise work (RMSNorm, RoPE, SwiGLU, dropout, the
LoRA scaling) and replaces Python module calls with one generated launcher per graph.

- Sequence lengths are symbolic from the first step, so group_by_length's
  ever-changing lengths reuse one graph instead of recompiling; the 32 layers of a
  Llama share it (a batch without padding, hence without a mask, makes a second).
- With gradient checkpointing on, transformers' checkpoint around each layer is
  replaced by the compiled graph's own recomputation: the layer keeps only its
  inputs (activation memory budget 0) and recomputes the rest in its compiled
  backward. With transformers' checkpoint kept, the compiled forward ran twice a
  step from eager code: slower at the same peak memory (docs/performance.md, "compile").
  A random op would be recomputed with a new draw, so LoRA's dropout becomes
  seeded_dropout.SeededDropout (Acceleration.prepare_adapters), and a model with any
  other dropout keeps transformers' checkpoint.

Tracing transformers' checkpoint into the graph instead fails in torch 2.11's
partitioner ("Node ... was invalid, but is output"); CUDA graphs over these layers
crash in their first backward with symbolic lengths, a plain bf16 Llama's too (torch
2.11; with static shapes they run: bench/RESULTS.md's history has the bisection).
With dequantize_in_graph the forward and the recompute dequantize the 4-bit weights in
the graph itself (dequant.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.training.acceleration.class_swap import cached_subclass

if TYPE_CHECKING:
    from core.acceleration_plan import AccelerationPlan

logger = logging.getLogger(__name__)

# Symbolic lengths make one graph for all layers, a second without an attention mask;
# the default limit of 8 graphs per code object is shared by every compiled layer.
DYNAMO_CACHE_SIZE_LIMIT = 64


def layer_forward_without_checkpoint(self: Any, *args: Any, **kwargs: Any) -> Any:
    """A decoder layer's own forward, whatever gradient_checkpointing says."""
    return type(self)._loraboard_plain_forward(self, *args, **kwargs)


def recompute_in_compiled_graph(layer: Any) -> None:
    """Bypass transformers' checkpoint for `layer`; its compiled graph recomputes instead.

    transformers 5.x checkpoints in GradientCheckpointingLayer.__call__ (older) or in a
    wrapper around forward (newer); the subclass takes both out.
    """
    import torch

    base = type(layer)
    forward = base.forward
    code = getattr(forward, "__code__", None)
    if code is not None and code.co_name == "forward_with_checkpointing":
        forward = forward.__wrapped__
    layer.__class__ = cached_subclass(
        base,
        "Compiled",
        forward=layer_forward_without_checkpoint,
        __call__=torch.nn.Module.__call__,
        _loraboard_plain_forward=forward,
    )


def compile_decoder_layers(
    model: Any,
    *,
    recompute: bool,
    dequantize_in_graph: bool = False,
    dequantize_kernel: bool = False,
    cpp_wrapper: bool = False,
) -> int:
    """Mark every decoder layer of `model` for torch.compile; returns how many.

    Compilation is lazy: the first forward traces each layer as it is then, with
    peft's LoRA modules inside it, so this may run before LoRA wraps the model.
    recompute: the run asked for gradient checkpointing (see the module docstring); the
    caller must then make LoRA's dropout seeded once the adapters exist. The settings are
    process-wide; a training worker runs one training per process.
    dequantize_in_graph: the layers' bitsandbytes 4-bit weights are dequantized by torch
    ops inside the graph (dequant.py) instead of bitsandbytes' custom ops.
    dequantize_kernel: with dequantize_in_graph, by Loraboard's Triton kernel where it
    applies (dequant_kernel.py).
    cpp_wrapper: the generated code that runs each graph (allocations, kernel launches,
    the matmuls) is C++ instead of Python (Inductor's cpp_wrapper): less host time per
    layer call, for a C++ compile of each graph at the first steps.
    """
    import torch
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    dynamo_config = torch._dynamo.config
    dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, DYNAMO_CACHE_SIZE_LIMIT)
    dynamo_config.accumulated_cache_size_limit = max(
        dynamo_config.accumulated_cache_size_limit, 4 * DYNAMO_CACHE_SIZE_LIMIT
    )
    if recompute and _has_random_ops(model):
        logger.warning(
            "the model has dropout of its own: compiled layers keep transformers' checkpoint "
            "(the compiled graph would recompute a dropout mask with a new draw)"
        )
        recompute = False
    if recompute:
        torch._functorch.config.activation_memory_budget = 0.0
    use_lean_generated_code()
    import torch._inductor.config as inductor_config

    inductor_config.cpp_wrapper = cpp_wrapper  # process-wide: an earlier run's choice goes
    for layer in layers:
        if recompute:
            recompute_in_compiled_graph(layer)
        if dequantize_in_graph:
            from worker.training.acceleration.dequant import dequantize_in_graph as use_torch_ops

            use_torch_ops(layer, kernel=dequantize_kernel)
        layer.compile(dynamic=True)
    return len(layers)


def use_lean_generated_code() -> None:
    """Inductor settings for the compiled layers (process-wide, read when a graph compiles).

    - Pointwise kernels take Inductor's heuristic launch configuration instead of timing
      the candidates at the first steps: no slower without the timing, and the timing's
      scratch buffers were the peak of the whole run, above the classic recipe's.
    - The generated code skips its size, stride and alignment asserts on the inputs and
      outputs of every call: Python work on every layer call of a host-bound forward. They
      check what Dynamo's guards (the forward's inputs) and AOTAutograd (the backward's)
      already ensure.
    The figures: docs/performance.md, "compile".
    """
    import torch._inductor.config as inductor_config

    inductor_config.triton.autotune_pointwise = False
    inductor_config.size_asserts = False
    inductor_config.alignment_asserts = False


def _has_random_ops(model: Any) -> bool:
    """Dropout in the base model itself (LoRA's comes later and is made seeded)."""
    import torch

    config = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "dropout"):
        value = getattr(config, name, 0)
        if isinstance(value, (int, float)) and value > 0:
            return True
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


# What a run trains again without, after its compile failed, and how the log says it.
RETRY_WITHOUT = {
    "cpp-wrapper": "with Python wrappers instead of C++ ones",
    "compile": "without torch.compile",
}


def retry_without(
    error: BaseException, acceleration: AccelerationPlan, *, logged: bool
) -> tuple[str, str] | None:
    """After trainer.train() raised `error`: the feature to train again without and a line
    for the run's log, or None to let the error stand.

    Compilation is lazy: it fails in the first steps, on a model or a kernel the compiled
    layers were not tried on (Triton's compiler failed on a float32 layer with dropout).
    Nothing is logged yet, so the run starts again instead of failing; after a log it fails
    as it is. C++ wrappers need g++ and Python's headers on the worker: a failure with them
    on drops them first and keeps the compiled layers; any other drops the compiling.
    The caller drops its trainer and model, then forget_compiled_layers(), before retrying.
    """
    import torch

    if not isinstance(error, torch._dynamo.exc.TorchDynamoException):
        return None
    if not acceleration.compile_layers or logged:
        return None
    feature = "cpp-wrapper" if acceleration.cpp_wrapper else "compile"
    reason = failure_reason(error)
    return feature, f"compiling the decoder layers failed ({reason}); training again {RETRY_WITHOUT[feature]}"


def failure_reason(error: BaseException) -> str:
    """One line for the run's events: the backend's own error, not Dynamo's wrapper."""
    inner = getattr(error, "inner_exception", None) or error.__cause__ or error
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    return f"{type(inner).__name__}: {lines[-1] if lines else ''}"[:300]


def forget_compiled_layers() -> None:
    """Drop the compiled graphs and free their GPU memory (process-wide settings reset too)."""
    import gc

    import torch
    import torch._inductor.config

    torch._dynamo.reset()
    torch._inductor.config.cpp_wrapper = False  # the retry's plan sets its own
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def keep_compile_caches_in(directory: Path) -> None:
    """Point torch.compile's on-disk caches at `directory` (before anything compiles), unless
    the environment already names them (the Dockerfile does, on the data volume).

    With Inductor's FX graph cache and AOTAutograd's cache on, a second run of the same model
    shape, in any worker process that shares the directory, loads the compiled forward and
    backward instead of generating and compiling them again; Triton's cache keeps the kernels.
    """
    import os

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(directory / "torchinductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(directory / "triton"))
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
