"""NF4 / FP4 dequantization as a Triton kernel of Loraboard's own, callable from the
compiled layers as the torch op `loraboard::dequantize_4bit`.

Why: the compiled layers dequantize 640 weights a step on the 7B workload. Inductor's
kernel for dequant.py's torch ops ran at about half the bandwidth of bitsandbytes'
CUDA kernel (bench/dequant_speed.py, docs/performance.md), but
bitsandbytes' op costs 30-50 us of host time a call (Python dispatch). A
torch.library.triton_op is traced by torch.compile down to its Triton kernel, which
Inductor's generated code then launches like one of its own.

One program per BYTES packed bytes: each byte is loaded once and gives its two 4-bit codes
(high nibble first), both looked up in the quant type's 16-entry table, multiplied by their
block's absmax in float32 and rounded once to bfloat16, then stored as a pair. The
arithmetic of bitsandbytes and of the "dequant" feature (dequant.py), bit for bit. bfloat16 only (the
compiled layers are for bfloat16 models); nested quantization (8-bit absmax) and other
dtypes are left to the torch ops.

Needs triton (GPU machines have it; the planner compiles only where it is installed). On
CPU the kernel runs under Triton's interpreter (TRITON_INTERPRET=1 in the environment
before register() first runs), which the CPU tests use.
"""

from __future__ import annotations

import functools

import torch

# Packed bytes per program (2 x BYTES values): large enough to amortize a program's fixed
# work, small enough to give an H200's 132 SMs many programs for a 4096x4096 weight.
BYTES = 1024


@functools.cache
def register() -> None:
    """Define the kernel and register its torch op, once (triton is imported only here).

    Call it before torch.compile traces a dequantize() call: Dynamo traces the op, not
    its definition (dequant.dequantize_in_graph does).
    """
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton

    @triton.jit
    def dequantize_kernel(
        packed_ptr,
        absmax_ptr,
        code_ptr,
        after_ptr,
        out_ptr,
        numel,
        BLOCKSIZE: tl.constexpr,
        BYTES: tl.constexpr,
    ):
        # after_ptr is never read: it is an input so that the kernel runs once `after` exists.
        byte = tl.program_id(0) * BYTES + tl.arange(0, BYTES)
        in_range = byte < (numel + 1) // 2
        codes = tl.load(packed_ptr + byte, mask=in_range, other=0)
        scale = tl.load(absmax_ptr + byte // (BLOCKSIZE // 2), mask=in_range, other=0.0)
        high = tl.load(code_ptr + (codes >> 4)) * scale
        low = tl.load(code_ptr + (codes & 0x0F)) * scale
        # float32 to bfloat16, rounding to nearest even, in integer arithmetic: the same
        # bits whatever Triton's cast does (its CPU interpreter truncates).
        bits = tl.interleave(high, low).to(tl.uint32, bitcast=True)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).to(tl.uint16).to(tl.int16, bitcast=True)
        position = tl.program_id(0) * 2 * BYTES + tl.arange(0, 2 * BYTES)
        tl.store(out_ptr + position, rounded, mask=position < numel)

    @triton_op("loraboard::dequantize_4bit", mutates_args=())
    def dequantize_4bit(
        packed: torch.Tensor,
        absmax: torch.Tensor,
        code: torch.Tensor,
        after: torch.Tensor,
        numel: int,
        blocksize: int,
    ) -> torch.Tensor:
        # The bfloat16 bits as int16: the kernel writes integers (see its rounding).
        bits = torch.empty(numel, dtype=torch.int16, device=packed.device)
        grid = (triton.cdiv((numel + 1) // 2, BYTES),)
        wrap_triton(dequantize_kernel)[grid](
            packed, absmax, code, after, bits, numel, BLOCKSIZE=blocksize, BYTES=BYTES
        )
        return bits.view(torch.bfloat16)


def dequantize(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    code: torch.Tensor,
    numel: int,
    blocksize: int,
    after: torch.Tensor | None = None,
) -> torch.Tensor:
    """The flat bfloat16 dequantized weight (numel values) from non-nested 4-bit storage.

    packed: the uint8 bytes, two codes each; absmax: float32, one per `blocksize` values;
    code: the quant type's 16 float32 values. With `after`, the kernel waits for it.
    """
    if blocksize % 2:
        raise ValueError(f"blocksize {blocksize} is odd: a byte's two values would straddle two blocks")
    if not torch.compiler.is_compiling():
        register()
    return torch.ops.loraboard.dequantize_4bit(
        packed.reshape(-1).view(torch.uint8),
        absmax,
        code,
        packed if after is None else after,
        numel,
        blocksize,
    )
