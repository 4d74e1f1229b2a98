"""The CPU demo really learns: the demo preset on the demo model, a held-out check by greedy decoding.

Held-out prompts are unseen (phrasing, word) combinations: right answers need the
word -> antonym mapping learned from training. The random-weight base gets
(almost) none; the adapter must get >= 90%, and the whole run must fit in
3 minutes on a 2-core CPU (longer on a slower one: WORK_LIMIT_GFLOP).
"""

from __future__ import annotations

import json
import time

import pytest

from core.demo_dataset import demo_dataset_path
from core.run_config import DEMO_DATASET_ID, DEMO_MODEL_ID, preset_config
from worker.training.reporting import DataSources, MemoryReporter

pytestmark = pytest.mark.slow

TIME_LIMIT_S = 180
# The run is float32 matrix products on the CPU (the demo model's linear layers: about 70% of
# its time under cProfile), so its time follows how fast the machine multiplies. 180 s held on
# the 2-core box it was set on; boxes of that kind also come slower (2026-12-07: an AMD EPYC
# without AVX-512, 101-115 GFLOP/s on the layers' shapes, the run 186-214 s). On a slower box
# the limit is as long as WORK_LIMIT_GFLOP of those products take there (261-296 s on that one).
WORK_LIMIT_GFLOP = 30_000


def layer_matmul_gflops() -> float:
    """This machine's float32 rate on the demo's largest layer shape (a batch of 32 x 64 tokens)."""
    import torch

    tokens, weight = torch.randn(2048, 256), torch.randn(256, 688)
    for _ in range(5):
        tokens @ weight
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(50):
            tokens @ weight
        best = min(best, time.perf_counter() - started)
    return 50 * 2 * 2048 * 256 * 688 / best / 1e9


def heldout_accuracy(models_dir, adapter_dir, config) -> float:
    from worker.training.inference import generate_chat

    samples = [json.loads(line) for line in demo_dataset_path("heldout").read_text().splitlines()]
    right = 0
    for sample in samples:
        question, answer = sample["messages"][0], sample["messages"][1]["content"]
        reply = generate_chat(
            DEMO_MODEL_ID,
            adapter_dir,
            [question],
            models_dir=models_dir,
            use_4bit=config.use_4bit,
            quantization=config.model_dump(
                include={"bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "use_nested_quant"}
            ),
            max_tokens=4,
            temperature=0,
        )
        right += reply["content"] == answer
    return right / len(samples)


def test_demo_preset_learns_antonyms_in_minutes(tmp_path):
    from worker.training.trainer import run_training

    gflops = layer_matmul_gflops()
    time_limit_s = max(TIME_LIMIT_S, WORK_LIMIT_GFLOP / gflops)
    config = preset_config("demo")
    models_dir = tmp_path / "models"  # the demo model is built inside the measured time: first use
    reporter = MemoryReporter()
    started = time.perf_counter()
    result = run_training(config, tmp_path / "run", reporter, DataSources(train=DEMO_DATASET_ID), models_dir)
    elapsed = time.perf_counter() - started
    loss = result.final_metrics.get("loss")
    print(
        f"demo run: {elapsed:.1f} s (limit {time_limit_s:.0f} s at {gflops:.0f} GFLOP/s), "
        f"{result.global_step} steps, final loss {loss}"
    )
    assert elapsed < time_limit_s
    assert not result.stopped_early
    assert result.global_step == reporter.derived_values["total_steps"]

    adapter_accuracy = heldout_accuracy(models_dir, str(result.adapter_dir), config)
    base_accuracy = heldout_accuracy(models_dir, None, config)
    print(f"held-out exact answers: adapter {adapter_accuracy:.1%}, base {base_accuracy:.1%}")
    assert adapter_accuracy >= 0.9
    assert base_accuracy <= 0.1
