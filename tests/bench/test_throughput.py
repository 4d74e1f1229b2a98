"""bench/throughput.py end to end on CPU (--tiny): a variant's JSON carries the host time
per phase of its timed steps, and a profiled variant the real tokens of its profiled steps."""

from __future__ import annotations

import json

from bench import throughput
from bench.diagnostics.step_phases import PHASES
from tests.training_support import six_step_trainer


def test_a_tiny_run_records_phases_and_the_profiled_steps_tokens(tmp_path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--tiny", "--variants", "reference", "--steps", "5", "--warmup", "2", "--profile", "reference"]
    assert throughput.main([*argv, "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["timed_steps"] == "3..5"
    phases = result["host_ms_per_phase"]
    assert list(phases) == list(PHASES) and phases["forward"] > 0 and phases["backward"] > 0
    assert sum(phases.values()) <= 1e3 * result["s_per_step"] * 1.5  # medians of the same steps
    tokens = result["profile"]["real_tokens_per_step"]
    assert len(tokens) == result["profile"]["steps"] == 3 and all(t > 0 for t in tokens)


def test_profile_window_profiles_the_timed_steps_themselves(tmp_path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--tiny", "--variants", "reference", "--steps", "6", "--warmup", "2", "--profile", "reference"]
    assert throughput.main([*argv, "--profile-window", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["timed_steps"] == "3..6" and result["profile"]["steps"] == 4
    assert sum(result["profile"]["real_tokens_per_step"]) == result["timed_tokens"]
    assert "not a measurement" in result["timing"]


def test_the_clock_synchronizes_at_the_window_ends_only_or_at_every_step(tmp_path) -> None:
    import torch

    def train(synced_steps):
        clock = throughput.StepClock(synced_steps)
        synchronized: list[int] = []
        clock.sync = lambda: synchronized.append(len(clock.times))  # type: ignore[method-assign]
        trainer = six_step_trainer(
            torch.nn.Linear(4, 1),
            tmp_path,
            [{"input": torch.randn(4)} for _ in range(12)],
            compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs.pow(2).mean(),
        )
        trainer.add_callback(clock.callback)
        trainer.train()
        assert len(clock.times) == 7  # train begin and every step end
        return synchronized

    # When each synchronize ran, as the steps timed before it: at train begin, and at the
    # ends of steps 2 and 5 (the window's edges) and 6 (the last); or at every step's end.
    assert train({2, 5}) == [0, 2, 5, 6]
    assert train(None) == [0, 1, 2, 3, 4, 5, 6]
