"""SDPA attention whose mask is built without reading the batch on the host.

transformers' SDPA mask (masking_utils.sdpa_mask) first asks whether the batch has any
padding at all, to hand SDPA `is_causal=True` instead of a mask when it has none. That
question is `attention_mask.sum() == numel` turned into a Python bool: up to three waits
for the GPU at the start of every forward, before any of the step's kernels is queued.

"loraboard_sdpa" is transformers' own SDPA attention with transformers' own mask
function, asked never to skip the mask. Where the batch has padding (almost every
group_by_length batch of different lengths) the mask is the very same; a batch without
padding gets a full causal mask instead of `is_causal`, the same attention by another
SDPA kernel. Registered through transformers' AttentionInterface and
AttentionMaskInterface, the documented way to add an attention implementation.
"""

from __future__ import annotations

from typing import Any

ATTENTION = "loraboard_sdpa"


def sdpa_mask_without_host_checks(*args: Any, **kwargs: Any) -> Any:
    """masking_utils.sdpa_mask, always building the mask (no read of the padding on the host)."""
    from transformers.masking_utils import sdpa_mask

    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    """Make ATTENTION a name transformers knows (idempotent)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION, sdpa_attention_forward)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask_without_host_checks)


def use_mask_without_host_checks(model: Any) -> bool:
    """Switch an SDPA model to ATTENTION; True if it was switched (other attentions stay)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    register()
    model.set_attn_implementation(ATTENTION)
    return model.config._attn_implementation == ATTENTION
