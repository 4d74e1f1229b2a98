"""Where a run's wall time goes, from the worker's start on it to the adapter on disk.

A run spends its first minute on work that shows no step: fetching or building the
model's files, reading the data, loading the base in 4 bit, tokenizing, and on the
fast path compiling the decoder layers during the first step. Each phase is reported
as it starts (an event, and `runtime.phase` for the run page's header), so that a
compile is never mistaken for a hang; when it ends its seconds go to
`runtime.timings`, which also holds the steady pace and the peak GPU memory:

    model_files_s, data_s, model_load_s, trainer_s   the phases before step 1
    first_step_s        seconds from the start to the end of optimizer step 1
    train_s             trainer.train() as a whole, first step included
    save_s              writing the final adapter
    total_s             the start to the adapter on disk
    steady_tokens_per_s real tokens / s over the steps after the first STEADY_SKIP of them
    peak_allocated_gib  torch.cuda.max_memory_allocated during training (CUDA only)
    compiled_graphs     graphs torch.compile made (compiled layers only; more than one per
                        layer shape means recompiles)
    compile_s           where compiling went (compiled layers only): torch's own timers of its
                        compile stages (Dynamo's tracing, AOTAutograd, Inductor's forward and
                        backward, waiting for kernels), the stages of a second or more
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core.event_shapes import STARTUP_PHASES
from worker.training.reporting import Reporter

# The steady pace leaves out the first tenth of the steps: the compile, the allocator
# growing to its peak and the learning-rate warm-up all live there.
STEADY_SKIP = 0.1


class RunTimings:
    """Phase clock of one run; survives the retry after a failed compile (one clock per run)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.started = time.perf_counter()
        self.timings: dict[str, Any] = {}  # seconds, counts, and compile_s: seconds by stage
        self._step_seconds: list[tuple[float, int]] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @contextmanager
    def phase(self, key: str, description: str) -> Iterator[None]:
        """Time one phase under `{key}_s`; a retry adds to what the failed attempt spent."""
        self.reporter.event(f"{description}…", "info", {"phase": key})
        self._publish_phase(description)
        began = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - began
            self.timings[f"{key}_s"] = round(self.timings.get(f"{key}_s", 0.0) + spent, 3)
            self._publish()

    def first_step_done(self, compiling: bool) -> None:
        """Called at the end of optimizer step 1 (after the GPU finished it)."""
        self.timings["first_step_s"] = round(self.elapsed(), 3)
        first_step = self.timings["first_step_s"]
        step_one = first_step - sum(self.timings.get(key, 0.0) for key, _ in STARTUP_PHASES)
        what = "compiling the decoder layers and the step" if compiling else "the step"
        self.reporter.event(
            f"first step done {first_step:.1f} s after the start ({step_one:.1f} s of it {what})",
            "info",
            {"phase": "first_step", "seconds": self.timings["first_step_s"]},
        )
        self._publish_phase("training")

    def step(self, seconds: float, tokens: int) -> None:
        self._step_seconds.append((seconds, tokens))

    def training_done(
        self,
        peak_allocated_bytes: int | None,
        *,
        compiled_graphs: int | None = None,
        compile_seconds: dict[str, float] | None = None,
    ) -> None:
        skip = int(len(self._step_seconds) * STEADY_SKIP)
        steady = self._step_seconds[skip:]
        seconds = sum(item[0] for item in steady)
        tokens = sum(item[1] for item in steady)
        if seconds > 0 and tokens > 0:
            self.timings["steady_tokens_per_s"] = round(tokens / seconds, 1)
        if peak_allocated_bytes is not None:
            self.timings["peak_allocated_gib"] = round(peak_allocated_bytes / 2**30, 3)
        if compiled_graphs is not None:
            self.timings["compiled_graphs"] = compiled_graphs
        if compile_seconds is not None:
            self.timings["compile_s"] = compile_seconds
        self._publish()

    def finished(self) -> None:
        self.timings["total_s"] = round(self.elapsed(), 3)
        self.reporter.runtime({"phase": None, "timings": dict(self.timings)})

    def _publish_phase(self, description: str) -> None:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.reporter.runtime({"phase": {"name": description, "since": now}})

    def _publish(self) -> None:
        self.reporter.runtime({"timings": dict(self.timings)})
