"""bench/diagnostics/matmul_floor.py: the epoch's unavoidable products, counted and timed."""

from __future__ import annotations

import json

import pytest
import torch

from bench.diagnostics import matmul_floor
from bench.diagnostics.matmul_floor import Shape, flops_per_token, padded_batches


def test_batches_pad_to_their_longest_sample_rounded_up_to_eight() -> None:
    # Sorted longest first, four a batch: (100, 90, 41, 40) -> 4 x 104; (39, 5) -> 2 x 40.
    assert padded_batches([40, 100, 5, 90, 39, 41]) == [4 * 104, 2 * 40]


def test_a_7b_token_costs_the_forward_recompute_and_input_gradient_products() -> None:
    h, i, layers, vocab = 4096, 11008, 32, 32000
    forward = 2 * (4 * h * h + 3 * h * i)
    recompute = 2 * (4 * h * h + 2 * h * i)  # down_proj's output is not needed by the backward
    input_gradient = forward
    lm_head = 2 * 2 * h * vocab
    assert (
        flops_per_token(Shape(h, i, layers, vocab))
        == layers * (forward + recompute + input_gradient) + lm_head
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_without_cuda_the_real_shape_is_refused() -> None:
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        matmul_floor.main([])


def test_the_goals_are_set_by_the_reference_row_of_the_same_call(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    results = tmp_path / "results.jsonl"
    rows = [
        {"variant": "reference", "card": "X", "tokens_per_s": 1000.0, "submit_to_adapter_s": 150.0},
        {"variant": "loraboard", "card": "X", "tokens_per_s": 3000.0, "submit_to_adapter_s": 60.0},
    ]
    results.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "floor.jsonl"
    assert matmul_floor.main(["--tiny", "--reference", str(results), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    assert printed["real_tokens"] <= printed["padded_tokens"] and printed["batches"] == 250
    assert printed["epoch_s"] > 0
    assert printed["tokens_per_s_ceiling"] == pytest.approx(
        printed["real_tokens"] / printed["epoch_s"], rel=0.01
    )
    goals = printed["goals"]
    assert goals["steady_tokens_per_s_needed"] == 6000.0
    assert (
        goals["warm_submit_to_adapter_s_needed"] == 30.0 and goals["cold_submit_to_adapter_s_needed"] == 50.0
    )
    assert goals["steady_needed_over_ceiling"] == pytest.approx(
        6000.0 / printed["tokens_per_s_ceiling"], rel=0.01
    )


def test_the_timed_products_are_exactly_the_counted_ones() -> None:
    """torch's FLOP counter over the timed loop: what time_epoch runs is what flops_per_token
    counts, for every batch (the first three run once more as the warm-up)."""
    from torch.utils.flop_counter import FlopCounterMode

    shape = Shape(hidden=16, intermediate=40, layers=3, vocab=24)
    batches = padded_batches([5, 17, 9, 30, 12, 8, 3, 21, 14])
    with FlopCounterMode(display=False) as counter:
        matmul_floor.time_epoch(shape, batches, "cpu", "float32")
    assert counter.get_total_flops() == flops_per_token(shape) * (sum(batches) + sum(batches[:3]))
