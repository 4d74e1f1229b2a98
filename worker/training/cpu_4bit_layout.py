"""bitsandbytes' CPU inference layout of 4-bit weights, kept from corrupting a model.

On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a Linear4bit's weight the
first time the layer runs in eval mode without gradients: the 4-bit codes are
regrouped for its fused kernel and the per-block scales (absmax) are transposed
to (K / blocksize, N) and cast to bfloat16. Generation is several times faster that
way (docs/performance.md, "CPU generation"), so chat keeps it, but:

- training must never run on it: the fused matmul has no backward, so the
  gradient would stop at the frozen base (keep_trainable_layout);
- bitsandbytes' own inverse, which `state_dict()` calls and peft calls
  `state_dict()` when it attaches an adapter, restores the codes but leaves the
  scales transposed in bfloat16, so every later answer, base or adapter, is
  gibberish. restore_plain_layout is the exact inverse: call it before peft
  touches the model; the next forward packs again.

Both directions are exact: bfloat16 scales widened to float32 pack back to the
same bfloat16, so a model restored and repacked answers bit for bit as one
loaded fresh.
"""

from __future__ import annotations

from typing import Any


def keep_trainable_layout(model: Any) -> None:
    """Never repack this model's 4-bit weights (a model being trained, and evaluated in between)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def restore_plain_layout(model: Any) -> int:
    """Undo the CPU packing of every packed 4-bit weight of model; returns how many were packed."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    restored = 0
    for module in model.modules():
        weight: Any = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is None or not getattr(state, "packing_format_for_cpu", False):
            continue
        # The packing dequantized nested scales into plain ones; keep them plain (float32)
        # rather than let bitsandbytes quantize them a second time, which is not exact.
        scales = state.absmax
        state.original_nested = False
        weight.data, state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
        state.absmax = scales.T.reshape(-1).float().contiguous()
        weight.quant_state = state
        if hasattr(module, "quant_state"):
            module.quant_state = state
        restored += 1
    return restored
