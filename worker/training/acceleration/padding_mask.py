"""SDPA attention whose mask is built without reading the batch on the host, and left out
where causal attention alone is the same attention.

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

Inside `causal_attention_for_right_padding()` (the trainer enters it for a batch it has
checked on the host, before the copy to the GPU: `is_right_padded`) no mask is built:
SDPA gets `is_causal=True`. With each row's padding at its end, a real token attends only
to the real tokens before it either way, so its output is the same; the padded positions'
outputs differ, and nothing reads them (their labels are -100). SDPA runs its flash
kernel then, which skips the masked half of the scores, instead of the memory-efficient
kernel reading a full (batch, 1, length, length) mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

ATTENTION = "loraboard_sdpa"
IGNORE_INDEX = -100

_right_padded: ContextVar[bool] = ContextVar("loraboard_right_padded", default=False)


def is_right_padded(batch: Any) -> bool:
    """Whether causal attention alone trains `batch` (a collated CPU batch) as its mask does.

    True for a 2D 0/1 attention mask with each row's padding at its end, no position ids
    (packed rows need their mask), and no label on a padded position.
    """
    import torch

    if not isinstance(batch, dict) or "position_ids" in batch:
        return False
    mask, labels = batch.get("attention_mask"), batch.get("labels")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.device.type != "cpu":
        return False  # read on the host only: a device tensor would make it wait
    if not bool(((mask == 0) | (mask == 1)).all()):
        return False
    if not bool((mask[:, 1:] <= mask[:, :-1]).all()):  # 1s, then 0s, in every row
        return False
    if labels is None:
        return True
    return isinstance(labels, torch.Tensor) and not bool((labels[mask == 0] != IGNORE_INDEX).any())


@contextmanager
def causal_attention_for_right_padding(right_padded: bool = True) -> Iterator[None]:
    """Within the block, ATTENTION's masks are left out where causal attention is the same."""
    token = _right_padded.set(right_padded)
    try:
        yield
    finally:
        _right_padded.reset(token)


def _is_plain_causal(kwargs: dict[str, Any]) -> bool:
    """Whether transformers asks for the causal mask of queries covering every key from 0,
    and would itself hand SDPA `is_causal` instead if the batch had no padding."""
    from transformers.masking_utils import causal_mask_function

    if kwargs.get("mask_function", causal_mask_function) is not causal_mask_function:
        return False  # sliding windows, packed rows, prefixes, ...
    if not kwargs.get("allow_is_causal_skip", True) or kwargs.get("local_size") is not None:
        return False
    if kwargs.get("kv_offset", 0) != 0 or kwargs.get("q_offset", 0) != 0:
        return False
    kv_length = kwargs.get("kv_length")
    if "q_length" in kwargs:
        q_length = kwargs["q_length"]
    elif kwargs.get("cache_position") is not None:  # transformers before q_length
        q_length = kwargs["cache_position"].shape[0]
    else:
        return False
    return kv_length is not None and q_length == kv_length


def sdpa_mask_without_host_checks(*args: Any, **kwargs: Any) -> Any:
    """masking_utils.sdpa_mask, always building the mask (no read of the padding on the
    host), or none for a right-padded batch's plain causal attention."""
    from transformers.masking_utils import sdpa_mask

    if _right_padded.get() and not args and _is_plain_causal(kwargs):
        return None
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
