"""The dashboard's memory estimate against peaks measured on a GPU (bench/measure_memory.py).

The measurements trained each config through the worker's own trainer on samples that
fill max_seq_length: memory-7b-h200-round9.json on today's default path (compiled layers
dequantizing in the graph), memory-{7b,13b}-h200-2026-11-27.json on round 1's (Liger, no
compile), whose peaks were lower; the estimate is held to both. What a run holds
on the card is PyTorch's peak reserved memory plus the paged optimizer's state, which
bitsandbytes keeps in CUDA managed memory outside PyTorch's counters (two fp32 Adam
moments: 8 bytes per trainable parameter). The CUDA context is left out on both sides
(the estimate shows it as its own line).
"""

from __future__ import annotations

import json

import pytest

from app.services.estimates import estimate_run
from core.run_config import RunConfig
from tests.paths import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "bench" / "results"
# "model" is the name of the directory the bench built the random-weight model in.
SHAPES = {
    "llama7b": "NousResearch/Llama-2-7b-hf",
    "m7": "NousResearch/Llama-2-7b-hf",
    "llama13b": "NousResearch/Llama-2-13b-hf",
}
MEASURED = [
    row
    for name in (
        "memory-7b-h200-round9.json",
        "memory-7b-h200-2026-11-27.json",
        "memory-13b-h200-2026-11-27.json",
    )
    for row in json.loads((RESULTS / name).read_text())
]


def test_measurements_cover_both_shapes_batches_ranks_and_targets() -> None:
    assert len(MEASURED) >= 6
    assert sum(row["model"] == "m7" for row in MEASURED) >= 5  # today's default path
    assert {SHAPES[row["model"]] for row in MEASURED} == set(SHAPES.values())
    assert {row["batch"] for row in MEASURED} == {1, 4, 8}
    assert {row["lora_r"] for row in MEASURED} == {16, 64}
    assert {row["target_modules"] for row in MEASURED} == {"q_proj,v_proj", "all-linear"}


@pytest.mark.parametrize(
    "row", MEASURED, ids=lambda r: f"{r['model']}-r{r['lora_r']}-{r['target_modules']}-b{r['batch']}"
)
def test_estimate_is_within_15_percent_of_the_measured_peak(row: dict) -> None:
    targets = None if row["target_modules"] == "q_proj,v_proj" else row["target_modules"]
    config = RunConfig(
        model_name=SHAPES[row["model"]],
        lora_r=row["lora_r"],
        target_modules=targets,
        per_device_train_batch_size=row["batch"],
        max_seq_length=row["seq_len"],
    )
    estimate = estimate_run(config)
    assert estimate.params is not None and estimate.memory is not None
    assert estimate.params["trainable"] == row["trainable_measured"]
    parts = {part["key"]: part["bytes"] for part in estimate.memory["parts"]}
    estimated = estimate.memory["total_bytes"] - parts["overhead"]
    measured = row["peak_reserved_bytes"] + 8 * row["trainable_measured"]
    assert abs(estimated - measured) / measured <= 0.15, (estimated / 1e9, measured / 1e9)
