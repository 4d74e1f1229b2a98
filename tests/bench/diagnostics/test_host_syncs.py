"""bench/diagnostics/host_syncs.py: where a training step waits for the GPU, grouped by call site.

On CPU there is no sync debug mode: the step below raises torch's own warning text and
calls torch.cuda.synchronize (replaced by a no-op), as a CUDA step's waits would.
"""

from __future__ import annotations

import warnings

import torch

from bench.diagnostics.host_syncs import SYNC_WARNING, HostSyncRecorder
from tests.training_support import six_step_trainer


class _WaitingModel(torch.nn.Module):
    """A linear model whose forward "reads the device" once and synchronizes once."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        warnings.warn(SYNC_WARNING, stacklevel=1)  # what an .item() raises under the sync debug mode
        torch.cuda.synchronize()
        return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}


def test_records_each_wait_of_the_window_steps_by_call_site(tmp_path, monkeypatch) -> None:
    synchronized = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: synchronized.append(1))
    data = [{"x": torch.randn(4), "labels": torch.randn(())} for _ in range(12)]
    trainer = six_step_trainer(_WaitingModel(), tmp_path, data)
    recorder = HostSyncRecorder(first_step=3, steps=2)
    recorder.install(trainer)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        trainer.train()

    summary = recorder.summary()
    assert summary["steps"] == 2 and summary["per_step"] == 2.0
    assert [site["per_step"] for site in summary["sites"]] == [1.0, 1.0]
    assert all(site["stack"][-1].endswith(" forward") for site in summary["sites"])
    assert len(synchronized) == 6  # the real one still ran, in and out of the window
    # Outside the window the warnings were shown as usual; inside, recorded instead.
    assert sum(SYNC_WARNING in str(w.message) for w in shown) == 4
    assert torch.cuda.synchronize is not recorder._synchronize  # put back
