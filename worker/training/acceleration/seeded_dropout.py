"""Dropout whose mask is a pure function of (seed, salt, position): recomputable exactly.

The compiled decoder layers (compile.py) keep no activations: their backward
recomputes the forward. An ordinary dropout there would draw a second, different
mask in the recompute, and the gradient would no longer be the derivative of the
loss the forward computed (tests/worker/training/acceleration/test_compile.py shows the
difference; docs/performance.md, "compile", has its size). torch's philox functionalization fixes that on
CUDA only. Here the mask is a hash of the element's position, a per-module salt and
a per-forward seed held in a tensor, so any recompute, on any device, sees the same
mask, and the compiled graph holds no random op at all.

The seed is one int64 tensor shared by every SeededDropout of a model and redrawn
from torch's generator (so set_seed makes runs repeatable) by a forward pre-hook on
the top-level model: each forward pass gets new masks, its recompute the same ones.
"""

from __future__ import annotations

from typing import Any

import torch

_MASK32 = 0xFFFFFFFF


def keep_mask(shape: torch.Size, seed: torch.Tensor, salt: torch.Tensor, p: float) -> torch.Tensor:
    """True where an element is kept: a 32-bit xorshift-multiply hash of (position, seed,
    salt), compared with p * 2**32.

    int64 arithmetic on values kept under 2**32, with multipliers under 2**31: no product
    reaches 2**63, so nothing overflows on any backend (eager, Inductor's C++ or Triton),
    and every value is non-negative before a shift. Positions stay under 2**31 (a 2 GB
    bf16 activation), seeds under 2**31.
    """
    positions = torch.arange(shape.numel(), device=seed.device, dtype=torch.int64).reshape(shape)
    offset = (seed * 0x2545F491 + salt * 0x27D4EB2F) & _MASK32
    # The offset (a tensor value) goes in before any multiplication: Inductor folds
    # "arange x constant" into its index arithmetic, which Triton may hold in int32
    # ("Scalar 6719617134592 is out of range for type int32", torch 2.11 on an H200).
    h = (positions + offset) & _MASK32
    h = (h * 0x61C88647) & _MASK32
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _MASK32
    h = h ^ (h >> 15)
    h = (h * 0x5BD1E995) & _MASK32
    h = h ^ (h >> 16)
    return h >= int(p * 2**32)


class SeededDropout(torch.nn.Module):
    """Inverted dropout (scale kept elements by 1 / (1 - p)) with a recomputable mask."""

    seed: torch.Tensor
    salt: torch.Tensor

    def __init__(self, p: float, seed: torch.Tensor, salt: int) -> None:
        super().__init__()
        self.p = p
        self.register_buffer("seed", seed, persistent=False)
        # A tensor, not an int: torch.compile would specialise on an int and make one
        # graph per module; as a tensor it is an input of the one graph all layers share.
        salt_tensor = torch.tensor(salt, dtype=torch.int64, device=seed.device)
        self.register_buffer("salt", salt_tensor, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = keep_mask(x.shape, self.seed, self.salt, self.p)
        return x * keep.to(x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, salt={int(self.salt)}"


def use_seeded_dropout(model: Any) -> int:
    """Replace the nn.Dropout of every peft LoRA module of `model`; returns how many.

    Must run after peft made the adapters. The shared seed lives on the model's device.
    """
    device = next(model.parameters()).device
    seed = torch.zeros((), dtype=torch.int64, device=device)
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                dropouts[name] = SeededDropout(dropout.p, seed, salt=replaced + 1)
                replaced += 1
    if replaced:

        def new_masks(_module: Any, _args: Any) -> None:
            # Drawn from torch's generator: set_seed makes the masks repeatable.
            seed.fill_(int(torch.randint(0, 2**31 - 1, ())))

        model.register_forward_pre_hook(new_masks)
    return replaced
