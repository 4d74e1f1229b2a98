"""The "liger" feature: Liger's Triton kernels for RMSNorm, RoPE and SwiGLU, forward and
backward, one kernel each instead of several eager ops (and less activation memory).

Its cross-entropy kernels stay off: trl's SFTTrainer replaces the LM head with its own
chunked log-prob head, and Liger's would replace model.forward underneath it.
"""

from __future__ import annotations

from typing import Any


def apply_liger_kernels(model: Any) -> None:
    """Patch `model`'s modules in place (before LoRA wraps it)."""
    # Imported here: liger_kernel (and triton) exist only on GPU machines.
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(
        model=model,
        rms_norm=True,
        rope=True,
        swiglu=True,
        cross_entropy=False,
        fused_linear_cross_entropy=False,
    )
