"""bitsandbytes' 4-bit weights dequantized by torch ops, so that Inductor compiles them.

Inside the compiled decoder layers (compile.py) every 4-bit matmul went through
bitsandbytes' Python-level custom ops, one host-side dispatch per matmul (640 a step on the
7B workload), time that the CPU, not the GPU, sets (docs/performance.md). Written in torch
ops, every dequantization (the forward's, the recompute's and the input gradient's) becomes
one generated kernel inside the layer's graph, and no bitsandbytes call is left in the layers.

The arithmetic is bitsandbytes' own: each byte holds two 4-bit codes (high nibble
first), each code indexes the 16-entry table of the quant type (NF4 or FP4), and the
float32 product with the block's absmax is rounded once to the compute dtype. With
nested quantization the absmax values are themselves 8-bit codes with float32 scales
per block of blocksize2 plus an offset. Bit-identical to bitsandbytes on CPU
(tests/worker/training/acceleration/test_dequant.py); tests/gpu/test_compiled_layers_on_cuda.py
checks the same against its CUDA kernel, eagerly and compiled to Triton.
"""

from __future__ import annotations

from typing import Any

import torch

from worker.training.acceleration.class_swap import cached_subclass


def dequantize_4bit(packed: torch.Tensor, quant_state: Any, dtype: torch.dtype) -> torch.Tensor:
    """The weight of shape quant_state.shape in `dtype`, as bitsandbytes' matmul computes it.

    Rounded once from float32 to `dtype`, as bitsandbytes' gemm_4bit does for its input's
    dtype (its backward rounds to the quantized weight's original dtype first, which is
    the same when, as on Loraboard's paths, that is the compute dtype).
    """
    return _dequantize(packed, _statistics(quant_state), _Layout.of(quant_state, dtype))


class _Layout(tuple):
    """(shape, blocksize, blocksize of the nested statistics or 0, output dtype, whether to
    use Loraboard's Triton kernel where it applies): constants."""

    @classmethod
    def of(cls, quant_state: Any, dtype: torch.dtype, kernel: bool = False) -> _Layout:
        inner = quant_state.state2.blocksize if quant_state.nested else 0
        return cls((quant_state.shape, quant_state.blocksize, inner, dtype, kernel))


_MaybeTensor = torch.Tensor | None  # a runtime alias: `from __future__` does not cover it
_Statistics = tuple[torch.Tensor, torch.Tensor, _MaybeTensor, _MaybeTensor, _MaybeTensor]


def _statistics(quant_state: Any) -> _Statistics:
    """absmax, code, and for nested quantization the absmax's own absmax, code and offset."""
    if not quant_state.nested:
        return quant_state.absmax, quant_state.code, None, None, None
    inner = quant_state.state2
    return quant_state.absmax, quant_state.code, inner.absmax, inner.code, quant_state.offset


def _dequantize(
    packed: torch.Tensor, statistics: _Statistics, layout: _Layout, after: torch.Tensor | None = None
) -> torch.Tensor:
    """The dequantized weight; with `after`, computed only once `after` exists (see _Linear4bit)."""
    absmax, code, absmax2, code2, offset = statistics
    shape, blocksize, blocksize2, dtype, kernel = layout
    numel = shape.numel()
    if kernel and absmax2 is None and dtype == torch.bfloat16 and packed.is_cuda:
        from worker.training.acceleration import dequant_kernel

        # The same values from one hand-written kernel; `after` is one of its inputs.
        return dequant_kernel.dequantize(packed, absmax, code, numel, blocksize, after).reshape(shape)
    codes = packed.reshape(-1).view(torch.uint8)
    positions = torch.arange(numel, device=packed.device)
    # Position i's code is the high nibble of byte i // 2 when i is even, else the low one.
    # Index arithmetic, not a stack of the two halves: Inductor then makes the whole
    # dequantization one kernel that writes only the 16-bit weight; a stack made it
    # materialize both halves and their interleaving first (2 bytes a weight more).
    shifts = ((positions & 1) ^ 1) * 4
    nibbles = (codes[positions >> 1] >> shifts) & 0x0F
    if absmax2 is None or code2 is None or offset is None:
        scales = absmax.float()
    else:  # nested: each block's absmax is an 8-bit code with a float32 scale per blocksize2 blocks
        blocks = torch.arange(absmax.numel(), device=absmax.device)
        scales = code2[absmax.long()] * absmax2[blocks // blocksize2] + offset
    if after is not None:
        # A data dependency that changes no value: min(|a|, 0) is +0 for every number a,
        # infinities included (a NaN first gradient element makes the weight NaN, in a
        # gradient that is not finite anyway). Inductor cannot prove it constant, as it
        # does `0 * a`, so the kernel must wait for `after` and cannot merge with an
        # earlier dequantization of the same weight.
        scales = scales + after.reshape(-1)[:1].float().abs().clamp(max=0)
    values = code[nibbles] * scales[positions // blocksize]
    return values.to(dtype).reshape(shape)


class _Linear4bit(torch.autograd.Function):
    """x @ W.T with W dequantized by torch ops, in the forward (and so in the recompute)
    and again for the input gradient, where that one waits for the gradient.

    With a plain F.linear the backward reuses the W of its recompute, which then lives
    from the recompute to the input gradient together with the layer's other weights:
    +0.21 GiB at the 7B workload's peak (H200, bench/RESULTS.md). A second dequantization
    alone does not help: Inductor fuses the two dequantizations of one weight, which read
    the same bytes, into one kernel that runs at the recompute. Made to depend on this
    matmul's output gradient, the second one cannot run before that gradient exists:
    most 16-bit weights then live only around their own matmul. Three dequantizations of
    a weight a step, each a generated kernel (bitsandbytes' op, opaque to Inductor, did
    the same for ~30 us of CPU a call more). One exception on Llama: up_proj's gradient
    exists before its recompute, and Inductor fused its two dequantizations there (+57
    MiB at the 7B workload's peak, still under the classic recipe's; docs/performance.md).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, packed: torch.Tensor, quant_state: Any, layout: _Layout
    ) -> torch.Tensor:
        ctx.save_for_backward(packed)
        ctx.quant_state = quant_state
        ctx.layout = layout
        return torch.nn.functional.linear(x, _dequantize(packed, _statistics(quant_state), layout))

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:  # type: ignore[override]
        grad_x = None
        if ctx.needs_input_grad[0]:
            (packed,) = ctx.saved_tensors
            weight = _dequantize(packed, _statistics(ctx.quant_state), ctx.layout, after=grad_output)
            grad_x = grad_output @ weight
        return grad_x, None, None, None


def linear_4bit_in_torch_ops(self: Any, x: torch.Tensor) -> torch.Tensor:
    """bitsandbytes.nn.Linear4bit.forward, with the weight dequantized in torch ops."""
    compute_dtype = self.compute_dtype or x.dtype
    quant_state = self.weight.quant_state
    layout = _Layout.of(quant_state, compute_dtype, kernel=self._loraboard_dequantize_kernel)
    output = _Linear4bit.apply(x.to(compute_dtype), self.weight, quant_state, layout)
    if self.bias is not None:
        output = output + self.bias.to(compute_dtype)
    return output.to(x.dtype)


def dequantize_in_graph(model: Any, *, kernel: bool = False) -> int:
    """Make every bitsandbytes 4-bit linear layer of `model` dequantize in torch ops.

    Returns how many. Meant for the compiled layers: eagerly, bitsandbytes' own CUDA
    kernel is as fast and launches fewer kernels. kernel: on CUDA, bfloat16 and without
    nested quantization, Loraboard's Triton kernel (dequant_kernel.py) instead of
    the torch ops, which Inductor compiles to a kernel about half as fast.
    """
    import bitsandbytes as bnb

    if kernel:
        from worker.training.acceleration import dequant_kernel

        dequant_kernel.register()  # before torch.compile traces a call of it
    changed = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        module.__class__ = cached_subclass(
            type(module),
            "KernelDequantized" if kernel else "GraphDequantized",
            forward=linear_4bit_in_torch_ops,
            _loraboard_dequantize_kernel=kernel,
        )
        changed += 1
    return changed
