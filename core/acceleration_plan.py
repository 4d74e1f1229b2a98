"""Which parts of Loraboard's fast path a run gets: a pure function of the device, the
model's size and the run's own settings, shared by the worker (which carries the plan
out: worker/training/acceleration/, one module per feature, where each feature's reasons
are told) and the web server's memory estimate (which asks what a GPU worker would do).

Default features can be left off (disable) and opt-in ones turned on (enable); the
figures behind each choice are in docs/performance.md. On a CPU the plan is empty.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

DEFAULT_FEATURES = frozenset({"sdpa", "bf16", "liger", "compile", "dequant", "async", "flash"})
OPTIONAL_FEATURES = frozenset({"optimizer", "offload", "dequant-kernel", "cpp-wrapper"})

# Packages the fast path's kernels come from: present on GPU workers, often not on the
# web server, which asks the planner what a GPU worker would do (the memory estimate).
GPU_PACKAGES = frozenset({"triton", "liger_kernel"})

# torch.compile costs about a minute on the first steps (80 s for the 7B shape on an
# H100 host): worth it where a step is long, not for the demo's tiny model, whose
# whole run takes less. Hidden size 2048 and up: the 1B-parameter class and larger.
COMPILE_MIN_HIDDEN_SIZE = 2048

# Batch lengths the compiled layers see are multiples of this (see plan_acceleration).
SEQUENCE_ALIGNMENT = 8

# torch's fused AdamW: one multi-tensor kernel for every adapter tensor. Its state
# has the parameters' dtype, so the worker keeps the adapters in fp32 (trl
# casts QLoRA adapters to bf16, and Adam's second moment with beta2 = 0.999 moves
# by 0.1% a step, below bf16's 0.4% resolution: it would stop tracking).
FUSED_OPTIMIZER = "adamw_torch_fused"


@dataclass
class AccelerationPlan:
    """Overrides on top of the run's own configuration, and the reasons for them: plain data
    (dtypes by name), which the worker's Acceleration carries out."""

    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra kwargs for AutoModelForCausalLM.from_pretrained (dtype by name, attn_implementation)."""
    quantization_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides for BitsAndBytesConfig kwargs (bnb_4bit_compute_dtype by name)."""
    sft_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides for trl SFTConfig kwargs (bf16/fp16, optim, activation_offloading)."""
    notes: list[str] = field(default_factory=list)
    """Human-readable lines: what was turned on and why (recorded on the run)."""
    liger: bool = False
    """Patch RMSNorm, RoPE and SwiGLU with Liger's Triton kernels when the model is prepared."""
    no_cudnn_attention: bool = False
    """Turn off PyTorch's cuDNN SDPA backend (process-wide) when the model is prepared."""
    fp32_adapters: bool = False
    """Cast the trainable (adapter) parameters back to fp32 before training."""
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


def installed_gpu_packages() -> frozenset[str]:
    """The GPU_PACKAGES this process can import."""
    return frozenset(name for name in GPU_PACKAGES if importlib.util.find_spec(name) is not None)


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
    installed: frozenset[str] | None = None,
) -> AccelerationPlan:
    """Decide the fast path for one run.

    device_type: "cuda", "cpu", "mps", ... (torch.device(...).type).
    compute_capability: torch.cuda.get_device_capability() on CUDA, else None.
    gradient_checkpointing, packing: the run's own settings (kept as they are).
    hidden_size: the model's (config.hidden_size); torch.compile only pays off on large models.
    compute_dtype: the run's own ("float16", "bfloat16", "float32"); bfloat16 replaces a
        16-bit float only: a run that asks for float32 compute keeps its precision.
    disable: default features to leave off (DEFAULT_FEATURES), for ablations and as an escape hatch.
    enable: opt-in features to turn on (OPTIONAL_FEATURES).
    installed: which GPU_PACKAGES exist where the run trains; None = this process's.
    """
    unknown = (disable | enable) - DEFAULT_FEATURES - OPTIONAL_FEATURES
    if unknown:
        raise ValueError(f"unknown acceleration features: {sorted(unknown)}")
    features = (DEFAULT_FEATURES - disable) | enable

    plan = AccelerationPlan()
    if device_type != "cuda" or compute_capability is None:
        plan.notes.append(f"acceleration: none on {device_type} (the fast path needs a CUDA GPU)")
        return plan

    packages = installed_gpu_packages() if installed is None else installed
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
        plan.model_kwargs["dtype"] = "bfloat16"
        plan.quantization_kwargs["bnb_4bit_compute_dtype"] = "bfloat16"
        plan.sft_kwargs.update(bf16=False, fp16=False)
        plan.notes.append(f"bfloat16 model and 4-bit compute dtype (compute capability {cc}): no autocast")
    elif "bf16" in features:
        plan.notes.append(f"bfloat16 off: compute capability {cc} < 8.0 has no bfloat16 matmul")

    if "compile" in features:
        if plan.model_kwargs.get("dtype") != "bfloat16":
            # Measured only on bfloat16 models; a float32 model with LoRA dropout failed
            # in Triton's compiler on an H200 ("PassManager::run failed", torch 2.11).
            plan.notes.append("torch.compile skipped: the compiled layers are for bfloat16 models")
        elif "triton" not in packages:
            plan.notes.append("torch.compile skipped: triton is not installed")
        elif hidden_size is None or hidden_size < COMPILE_MIN_HIDDEN_SIZE:
            plan.notes.append(
                f"torch.compile skipped: hidden size {hidden_size} < {COMPILE_MIN_HIDDEN_SIZE} "
                "(a model this small trains in less time than compiling it takes)"
            )
        else:
            plan.compile_layers = True
            plan.recompute_in_graph = gradient_checkpointing
            # Inductor guards a compiled graph on the sequence length's alignment to 8 when the
            # first batch's length is a multiple of 8: the first batch that is not would
            # compile a second graph. Padding every batch to a multiple of 8 keeps one graph
            # (and tensor-core-friendly shapes), for a few pad tokens a row.
            plan.sft_kwargs["pad_to_multiple_of"] = SEQUENCE_ALIGNMENT
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
        if {"liger_kernel", "triton"} <= packages:
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
