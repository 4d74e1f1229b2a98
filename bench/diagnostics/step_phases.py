"""Where the host's time goes within one optimizer step, from timestamps (no profiler).

The profiler slows a CPU-bound step and names ops, not phases. This records
time.perf_counter() at the edges of each phase of transformers' training loop, with no
device synchronize in between, so the figures are the host's time per phase: on a
launch-bound step (the GPU waits for the CPU, bench/RESULTS.md) that is the step's own
time; where the host waits for the device (an .item(), a synchronize) the wait is counted
in the phase that waits.

Phases of one step, in the order the loop runs them:
  data       from the previous step's synchronize to this step's begin (the next batch
             fetched and collated)
  forward    compute_loss: the model's forward, the loss and trl's metrics (3 .item())
  backward   accelerator.backward(loss) (from compute_loss's return: the loss's scaling
             in between is part of it)
  clip       after the backward to the optimizer: the loss's NaN check (an .item()),
             the gradient norm and its clipping
  optimizer  optimizer.step()
  rest       after the optimizer to the step's end (scheduler, zero_grad, callbacks)
  wait       the step's end to the device's (a synchronize): how far the device is behind
"""

from __future__ import annotations

import statistics
import time
from typing import Any

PHASES = ("data", "forward", "backward", "clip", "optimizer", "rest", "wait")


class StepPhases:
    """Install on a trainer before train(); `summary(first, last)` after it."""

    def __init__(self, synchronize: Any) -> None:
        self.marks: list[dict[str, float]] = []
        self._synchronize = synchronize  # waits for the device (a no-op without one)
        self._last_synced: float | None = None

    def install(self, trainer: Any) -> None:
        """Wrap compute_loss and accelerator.backward and add the step callbacks.

        Add it before any other callback that synchronizes at the step end (the bench's
        clock), so that this one measures the wait.
        """
        from transformers import TrainerCallback

        phases = self
        compute_loss = trainer.compute_loss
        backward = trainer.accelerator.backward

        def timed_compute_loss(*args: Any, **kwargs: Any) -> Any:
            output = compute_loss(*args, **kwargs)
            phases._mark("forward_end")
            return output

        def timed_backward(*args: Any, **kwargs: Any) -> Any:
            output = backward(*args, **kwargs)
            phases._mark("backward_end")
            return output

        trainer.compute_loss = timed_compute_loss
        trainer.accelerator.backward = timed_backward

        class _Marks(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                phases.marks.append({"previous_synced": phases._last_synced or time.perf_counter()})
                phases._mark("begin")

            def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                phases._mark("optimizer_begin")

            def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                phases._mark("optimizer_end")

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                phases._mark("end")
                phases._synchronize()
                phases._mark("synced")
                phases._last_synced = phases.marks[-1]["synced"]

        trainer.add_callback(_Marks())

    def _mark(self, name: str) -> None:
        if self.marks:  # an evaluation's compute_loss outside a step has no step to mark
            self.marks[-1][name] = time.perf_counter()

    def durations(self, marks: dict[str, float]) -> dict[str, float]:
        """One step's phases in milliseconds."""
        edges = [
            ("data", "previous_synced", "begin"),
            ("forward", "begin", "forward_end"),
            ("backward", "forward_end", "backward_end"),
            ("clip", "backward_end", "optimizer_begin"),
            ("optimizer", "optimizer_begin", "optimizer_end"),
            ("rest", "optimizer_end", "end"),
            ("wait", "end", "synced"),
        ]
        return {name: 1e3 * (marks[stop] - marks[start]) for name, start, stop in edges}

    def summary(self, first: int, last: int) -> dict[str, float]:
        """Median milliseconds per phase over steps first..last (1-based, inclusive)."""
        steps = [self.durations(marks) for marks in self.marks[first - 1 : last]]
        if not steps:
            return {}
        return {name: round(statistics.median(step[name] for step in steps), 2) for name in PHASES}
