"""The "optimizer" feature (opt-in): torch's fused AdamW on float32 adapters.

One multi-tensor kernel a step instead of paged_adamw_32bit's update and synchronize per
tensor. Its state has the parameters' dtype, and Adam's second moment (beta2 = 0.999)
moves by 0.1% a step, below bfloat16's resolution: in bfloat16 it would stop tracking.
So the adapters go back to float32, which costs allocated memory.
"""

from __future__ import annotations

from typing import Any


def keep_adapters_in_float32(model: Any) -> None:
    """trl casts QLoRA adapters to bfloat16 when the trainer is built; the optimizer is made
    in train(), so casting here gives it float32 parameters and state. peft casts the LoRA
    branch's input to the adapter dtype and its result back."""
    import torch

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
