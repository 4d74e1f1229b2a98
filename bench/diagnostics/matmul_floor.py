"""The floor under the workload's epoch on this card: the matrix products no trainer of the
recipe can skip, timed alone.

With gradient checkpointing, each token meets every frozen weight three times a step: the
forward, the recompute before the backward (all but down_proj, whose output nothing in the
backward needs) and the input gradient (frozen weights need no weight gradient); the LM
head twice (forward and input gradient). This times exactly those products for the whole
epoch's batches, in bfloat16 with the weights already dequantized, and nothing else: no
4-bit dequantization, attention, norms, RoPE, LoRA, loss or optimizer, and every batch
padded as little as a batch of 4 allows (the lengths sorted, tighter than group_by_length).
No trainer of the recipe runs the epoch faster on this card: its tokens/s is a ceiling on
any trainer's steady pace, its seconds a floor under any submit-to-adapter time.

With --reference RESULTS.jsonl (the whole-run rows of the same call) it sets the issue's
goals beside the floor: 6x the reference's steady tokens/s, a warm run 5x and a cold run 3x
faster than the reference's submit-to-adapter.

Usage (GPU machine): python3 -m bench matmul-floor [--reference $OUT/results.jsonl] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BATCH_SIZE = 4
ALIGNMENT = 8  # the compiled path pads every batch to a multiple of 8 (core/acceleration_plan.py)
GOALS = {"steady_x": 6.0, "warm_x": 5.0, "cold_x": 3.0}


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    vocab: int


def padded_batches(lengths: list[int], batch_size: int = BATCH_SIZE) -> list[int]:
    """Tokens in each batch, padding included, with the least padding batches of this size allow."""
    ordered = sorted(lengths, reverse=True)
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    return [len(batch) * ALIGNMENT * math.ceil(max(batch) / ALIGNMENT) for batch in batches]


def layer_products(shape: Shape) -> list[tuple[str, int, int]]:
    """(pass, in, out) of one decoder layer's products with its frozen weights, a token each."""
    h, i = shape.hidden, shape.intermediate
    forward = [("forward", h, h)] * 4 + [("forward", h, i)] * 2 + [("forward", i, h)]
    recompute = [("recompute", h, h)] * 4 + [("recompute", h, i)] * 2
    # The input gradient of y = x W^T is dy W: from the output's width back to the input's.
    backward = [("backward", h, h)] * 4 + [("backward", i, h)] * 2 + [("backward", h, i)]
    return forward + recompute + backward


def flops_per_token(shape: Shape) -> int:
    per_layer = sum(2 * k * n for _, k, n in layer_products(shape))
    return shape.layers * per_layer + 2 * (2 * shape.hidden * shape.vocab)


def time_epoch(shape: Shape, batches: list[int], device: str, dtype_name: str) -> float:
    """Seconds the epoch's products take on the device, after a warm-up."""
    import torch

    dtype = getattr(torch, dtype_name)
    h, i, v = shape.hidden, shape.intermediate, shape.vocab
    most = max(batches)

    def weights(out_features: int, in_features: int) -> Any:
        return torch.randn(out_features, in_features, device=device, dtype=dtype) / math.sqrt(in_features)

    # Each layer its own weights, as nn.Linear keeps them (out, in): no layer finds another's in cache.
    layers = [
        {
            "attn": [weights(h, h) for _ in range(4)],
            "up": [weights(i, h) for _ in range(2)],
            "down": weights(h, i),
        }
        for _ in range(shape.layers)
    ]
    lm_head = weights(v, h)
    x_h = torch.randn(most, h, device=device, dtype=dtype)
    x_i = torch.randn(most, i, device=device, dtype=dtype)
    x_v = torch.randn(most, v, device=device, dtype=dtype)
    out_h = torch.empty(most, h, device=device, dtype=dtype)
    out_i = torch.empty(most, i, device=device, dtype=dtype)
    out_v = torch.empty(most, v, device=device, dtype=dtype)

    def step(tokens: int) -> None:
        a, b, c = x_h[:tokens], x_i[:tokens], x_v[:tokens]
        oa, ob, oc = out_h[:tokens], out_i[:tokens], out_v[:tokens]
        for layer in layers:  # forward
            for weight in layer["attn"]:
                torch.mm(a, weight.t(), out=oa)
            for weight in layer["up"]:
                torch.mm(a, weight.t(), out=ob)
            torch.mm(b, layer["down"].t(), out=oa)
        torch.mm(a, lm_head.t(), out=oc)
        torch.mm(c, lm_head, out=oa)  # the LM head's input gradient
        for layer in reversed(layers):  # recompute, then the input gradients
            for weight in layer["attn"]:
                torch.mm(a, weight.t(), out=oa)
            for weight in layer["up"]:
                torch.mm(a, weight.t(), out=ob)
            torch.mm(a, layer["down"], out=ob)
            for weight in layer["up"]:
                torch.mm(b, weight, out=oa)
            for weight in layer["attn"]:
                torch.mm(a, weight, out=oa)

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for tokens in batches[:3]:
        step(tokens)
    synchronize()
    started = time.perf_counter()
    for tokens in batches:
        step(tokens)
    synchronize()
    return time.perf_counter() - started


def reference_row(path: Path) -> dict[str, Any] | None:
    """The last reference row of a whole-run results table."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    references = [row for row in rows if row.get("variant") == "reference"]
    return references[-1] if references else None


def against_goals(floor: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, set by the reference's figures, beside what the products alone allow."""
    steady_needed = GOALS["steady_x"] * reference["tokens_per_s"]
    warm_needed_s = reference["submit_to_adapter_s"] / GOALS["warm_x"]
    cold_needed_s = reference["submit_to_adapter_s"] / GOALS["cold_x"]
    return {
        "reference": {
            key: reference.get(key) for key in ("card", "date", "tokens_per_s", "submit_to_adapter_s")
        },
        "steady_tokens_per_s_needed": round(steady_needed, 1),
        "steady_needed_over_ceiling": round(steady_needed / floor["tokens_per_s_ceiling"], 3),
        "warm_submit_to_adapter_s_needed": round(warm_needed_s, 2),
        "cold_submit_to_adapter_s_needed": round(cold_needed_s, 2),
        "products_alone_s": floor["epoch_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny shape on the CPU (the plumbing only)")
    parser.add_argument(
        "--reference", type=Path, help="whole-run results (JSONL) holding the reference's row"
    )
    parser.add_argument("--out", type=Path, help="append the result as one JSON line")
    args = parser.parse_args(argv)

    import torch

    from bench.workload import TINY_MAX_LEN, model_config, sample_lengths

    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("matmul-floor needs a CUDA GPU (or --tiny for the plumbing on a CPU)")
    config = model_config(tiny=args.tiny)
    shape = Shape(config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size)
    lengths = sample_lengths(max_len=TINY_MAX_LEN) if args.tiny else sample_lengths()
    batches = padded_batches(lengths)
    device, dtype = ("cpu", "float32") if args.tiny else ("cuda", "bfloat16")
    seconds = time_epoch(shape, batches, device, dtype)
    padded, real = sum(batches), sum(lengths)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "card": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": dtype,
        "shape": shape.__dict__,
        "batches": len(batches),
        "real_tokens": real,
        "padded_tokens": padded,
        "gflop_per_token": round(flops_per_token(shape) / 1e9, 3),
        "epoch_s": round(seconds, 3),
        "tflop_per_s": round(flops_per_token(shape) * padded / seconds / 1e12, 1),
        "tokens_per_s_ceiling": round(real / seconds, 1),
    }
    if args.reference:
        reference = reference_row(args.reference)
        if reference is None:
            raise SystemExit(f"no reference row in {args.reference}")
        result["goals"] = against_goals(result, reference)
    print(json.dumps(result, indent=2))
    if args.out:
        with args.out.open("a") as out:
            out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
