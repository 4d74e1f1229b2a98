"""bitsandbytes' 4-bit weights dequantized by torch ops, so that Inductor compiles them.

Inside the compiled decoder layers (compiled_layers.py) every 4-bit matmul goes through
bitsandbytes' Python-level custom ops: ~50 us of CPU a call, 640 calls a step on the 7B
workload, 27 ms of a 214 ms step that the CPU, not the GPU, sets (bench/RESULTS.md,
round 3's profile). Written in torch ops, the dequantization becomes one generated
Triton kernel per weight inside the layer's graph, launched by its wrapper.

The arithmetic is bitsandbytes' own: each byte holds two 4-bit codes (high nibble
first), each code indexes the 16-entry table of the quant type (NF4 or FP4), and the
float32 product with the block's absmax is rounded once to the compute dtype. With
nested quantization the absmax values are themselves 8-bit codes with float32 scales
per block of blocksize2 plus an offset. Bit-identical to bitsandbytes on CPU
(tests/unit/test_graph_dequantization.py).
"""

from __future__ import annotations

from typing import Any

import torch


def dequantize_4bit(packed: torch.Tensor, quant_state: Any, dtype: torch.dtype) -> torch.Tensor:
    """The weight of shape quant_state.shape in `dtype`, as bitsandbytes' matmul computes it.

    Rounded once from float32 to `dtype`, as bitsandbytes' gemm_4bit does for its input's
    dtype (its backward rounds to the quantized weight's original dtype first, which is
    the same when, as on Loraboard's paths, that is the compute dtype).
    """
    shape = quant_state.shape
    numel = shape.numel()
    codes = packed.reshape(-1).view(torch.uint8)
    nibbles = torch.stack((codes >> 4, codes & 0x0F), dim=-1).reshape(-1)[:numel]
    positions = torch.arange(numel, device=packed.device)
    values = quant_state.code[nibbles.long()] * _absmax(quant_state)[positions // quant_state.blocksize]
    return values.to(dtype).reshape(shape)


def _absmax(quant_state: Any) -> torch.Tensor:
    """Each block's float32 scale; decoded first when nested quantization stored it in 8 bits."""
    if not quant_state.nested:
        return quant_state.absmax.float()
    inner = quant_state.state2
    blocks = torch.arange(quant_state.absmax.numel(), device=quant_state.absmax.device)
    scales = inner.code[quant_state.absmax.long()] * inner.absmax[blocks // inner.blocksize]
    return scales + quant_state.offset


def linear_4bit_in_torch_ops(self: Any, x: torch.Tensor) -> torch.Tensor:
    """bitsandbytes.nn.Linear4bit.forward, with the weight dequantized in torch ops."""
    compute_dtype = self.compute_dtype or x.dtype
    weight = dequantize_4bit(self.weight, self.weight.quant_state, compute_dtype)
    bias = None if self.bias is None else self.bias.to(compute_dtype)
    return torch.nn.functional.linear(x.to(compute_dtype), weight, bias).to(x.dtype)


_SUBCLASSES: dict[type, type] = {}


def dequantize_in_graph(model: Any) -> int:
    """Make every bitsandbytes 4-bit linear layer of `model` dequantize in torch ops.

    Returns how many. Meant for the compiled layers: eagerly, bitsandbytes' own CUDA
    kernel is as fast and launches fewer kernels.
    """
    import bitsandbytes as bnb

    changed = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        base = type(module)
        if base not in _SUBCLASSES:
            _SUBCLASSES[base] = type(
                f"GraphDequantized{base.__name__}",
                (base,),
                {"forward": linear_4bit_in_torch_ops, "__module__": __name__},
            )
        module.__class__ = _SUBCLASSES[base]
        changed += 1
    return changed
