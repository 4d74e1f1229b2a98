"""The "sdpa" feature: attention by PyTorch's flash and memory-efficient SDPA kernels only.

On Hopper, torch picks cuDNN attention, which costs milliseconds of host time a call and
builds a cuDNN graph for every new sequence length; group_by_length batches bring new
lengths all the time. With cuDNN off, SDPA picks flash attention (no mask) or the
memory-efficient kernel (a mask).
"""

from __future__ import annotations


def turn_off_cudnn_attention() -> None:
    """Process-wide: a training worker process runs one training at a time."""
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)
