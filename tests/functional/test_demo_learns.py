"""The CPU demo really learns: the demo preset on the demo model, a held-out check by greedy decoding.

Held-out prompts are unseen (phrasing, word) combinations: right answers need the
word -> antonym mapping learned from training. The random-weight base gets
(almost) none; the adapter must get >= 90%, and the whole run must fit in
3 minutes on a 2-core CPU.
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

    config = preset_config("demo")
    models_dir = tmp_path / "models"  # the demo model is built inside the measured time: first use
    reporter = MemoryReporter()
    started = time.perf_counter()
    result = run_training(config, tmp_path / "run", reporter, DataSources(train=DEMO_DATASET_ID), models_dir)
    elapsed = time.perf_counter() - started
    loss = result.final_metrics.get("loss")
    print(f"demo run: {elapsed:.1f} s, {result.global_step} steps, final loss {loss}")
    assert elapsed < TIME_LIMIT_S
    assert not result.stopped_early
    assert result.global_step == reporter.derived_values["total_steps"]

    adapter_accuracy = heldout_accuracy(models_dir, str(result.adapter_dir), config)
    base_accuracy = heldout_accuracy(models_dir, None, config)
    print(f"held-out exact answers: adapter {adapter_accuracy:.1%}, base {base_accuracy:.1%}")
    assert adapter_accuracy >= 0.9
    assert base_accuracy <= 0.1
