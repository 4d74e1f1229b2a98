"""How fast is one 4-bit weight's dequantization on the GPU: bitsandbytes' CUDA kernel, the
Triton kernel Inductor generates from graph_dequantization's torch ops, and Loraboard's own
Triton kernel (dequantization_kernel.py), the last two compiled as the layers compile them.

Each dequantization reads the packed weight (half a byte a value) and its block scales and
writes the 16-bit weight (2 bytes a value): memory-bound, so the figure of merit is the
bytes moved per second against the card's bandwidth. The 7B workload runs 640 of them a
step (each layer's seven weights for the forward and for the input gradients, all but
down_proj's for the recompute; bench/RESULTS.md, round 6).

Usage (GPU machine): python3 bench/dequant_speed.py [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The Llama-2-7B projections' weight shapes (out, in): q/k/v/o, gate/up, down.
SHAPES = ((4096, 4096), (11008, 4096), (4096, 11008))
REPEATS = 200


def time_us(function, repeats: int = REPEATS) -> float:
    """Mean microseconds a call of `function` takes on the device (CUDA events, after warm-up)."""
    import torch

    for _ in range(5):
        function()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        function()
    stop.record()
    torch.cuda.synchronize()
    return 1e3 * start.elapsed_time(stop) / repeats


def measure(shape: tuple[int, int]) -> dict:
    import bitsandbytes.functional as bnb_functional
    import torch

    from worker.training.acceleration.dequant import dequantize_4bit

    weight = torch.randn(shape, dtype=torch.bfloat16, device="cuda")
    packed, state = bnb_functional.quantize_4bit(weight, quant_type="nf4")
    from worker.training import dequantization_kernel

    in_torch_ops = torch.compile(lambda: dequantize_4bit(packed, state, torch.bfloat16))
    expected = bnb_functional.dequantize_4bit(packed, state).to(torch.bfloat16)
    assert torch.equal(in_torch_ops(), expected)
    numel = shape[0] * shape[1]
    kernel = torch.compile(
        lambda: dequantization_kernel.dequantize(packed, state.absmax, state.code, numel, 64)
    )
    assert torch.equal(kernel().reshape(shape), expected)
    values = shape[0] * shape[1]
    moved = values * 2 + values // 2 + state.absmax.numel() * 4  # written + packed + scales
    result = {"shape": list(shape), "bytes_moved": moved}
    for name, function in (
        ("bitsandbytes", lambda: bnb_functional.dequantize_4bit(packed, state)),
        ("inductor", in_torch_ops),
        ("loraboard_kernel", kernel),
    ):
        us = time_us(function)
        result[f"{name}_us"] = round(us, 1)
        result[f"{name}_gb_per_s"] = round(moved / us / 1e3, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("dequant_speed.py times CUDA kernels: it needs a CUDA GPU")
    results = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "shapes": []}
    for shape in SHAPES:
        results["shapes"].append(measure(shape))
        print(json.dumps(results["shapes"][-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
