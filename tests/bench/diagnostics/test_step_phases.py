"""bench/diagnostics/step_phases.py: the host's milliseconds per phase of a real training loop."""

from __future__ import annotations

import time

import pytest
import torch

from bench.diagnostics.step_phases import PHASES, StepPhases
from tests.training_support import six_step_trainer


class _SlowBackwardModel(torch.nn.Module):
    """A linear model whose loss's backward sleeps 30 ms: a phase with a known length."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)
        loss.register_hook(lambda grad: time.sleep(0.03) or grad)
        return {"loss": loss}


def test_each_phase_of_a_training_step_is_timed_and_they_add_up_to_the_step(tmp_path) -> None:
    data = [{"x": torch.randn(4), "labels": torch.randn(())} for _ in range(16)]
    trainer = six_step_trainer(_SlowBackwardModel(), tmp_path, data, max_grad_norm=1.0)
    synchronized = []
    phases = StepPhases(lambda: synchronized.append(time.perf_counter()))
    phases.install(trainer)
    started = time.perf_counter()
    trainer.train()
    assert len(phases.marks) == 6 and len(synchronized) == 6

    summary = phases.summary(2, 6)
    assert list(summary) == list(PHASES)
    assert 30 <= summary["backward"] < 200  # the sleep is in the backward, and only there
    assert all(0 <= summary[name] < 30 for name in PHASES if name != "backward")
    steps = [phases.durations(marks) for marks in phases.marks[1:]]
    for step, marks in zip(steps, phases.marks[1:], strict=True):  # the phases tile the step
        step_s = marks["synced"] - marks["previous_synced"]
        assert sum(step.values()) * 1e-3 == pytest.approx(step_s, abs=1e-6)
    assert phases.marks[0]["previous_synced"] >= started
