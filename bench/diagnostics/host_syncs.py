"""Where a training step makes the host wait for the GPU, from torch's sync debug mode.

torch.cuda.set_sync_debug_mode("warn") makes every synchronizing CUDA call that torch
issues (an .item(), a bool() of a tensor, a blocking copy, torch.cuda.synchronize(),
a nonzero()) emit a warning; torch.cuda.synchronize() itself is not among them, so it is
wrapped while recording. This records, for a few steps after the warm-up, the Python
stack of each, grouped by the call site: which line of which library waits, and how
often a step. Waits inside other libraries' own C code are not seen.
"""

from __future__ import annotations

import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

# The bench's own files (its clock synchronizes too); not tests/bench, whose models stand
# in for a training step.
BENCH_DIR = str(Path(__file__).resolve().parents[1]) + "/"

SYNC_WARNING = "called a synchronizing CUDA operation"  # c10/cuda/CUDAFunctions.cpp
STACK_FRAMES = 6  # innermost frames kept per site: enough to name the library and the line


class HostSyncRecorder:
    """A trainer callback's worth of state: install(), train(), then summary()."""

    def __init__(self, first_step: int, steps: int) -> None:
        self.first_step = first_step  # 1-based: recording starts at this step's begin
        self.steps = steps
        self.sites: Counter[tuple[str, ...]] = Counter()
        self.recorded_steps = 0
        self._saved_showwarning: Any = None
        self._saved_synchronize: Any = None
        self._filters: Any = None

    def _showwarning(self, message: Any, category: Any, filename: str, lineno: int, *args: Any) -> None:
        if SYNC_WARNING not in str(message):
            return self._saved_showwarning(message, category, filename, lineno, *args)
        self._record(traceback.extract_stack()[:-2])  # without this function and warnings' own
        return None

    def _synchronize(self) -> None:
        self._record(traceback.extract_stack()[:-1])
        self._saved_synchronize()

    def _record(self, frames: Any) -> None:
        innermost = frames[-STACK_FRAMES:]
        if any(frame.filename.startswith(BENCH_DIR) for frame in innermost):
            return  # the bench's own clock, not the training step
        site = (f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}" for f in innermost)
        self.sites[tuple(site)] += 1

    def start(self) -> None:
        import torch

        self._filters = warnings.catch_warnings()
        self._filters.__enter__()
        warnings.simplefilter("always")  # every occurrence, not once per line
        self._saved_showwarning = warnings.showwarning
        warnings.showwarning = self._showwarning
        self._saved_synchronize = torch.cuda.synchronize
        torch.cuda.synchronize = self._synchronize
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize = self._saved_synchronize
        warnings.showwarning = self._saved_showwarning
        self._filters.__exit__(None, None, None)

    def install(self, trainer: Any) -> None:
        from transformers import TrainerCallback

        recorder = self
        last = self.first_step + self.steps - 1

        class _Window(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.global_step + 1 == recorder.first_step:
                    recorder.start()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if recorder.first_step <= state.global_step <= last:
                    recorder.recorded_steps += 1
                if state.global_step == last:
                    recorder.stop()

        # First in line, so that no other callback's own synchronize at the step end is counted.
        trainer.callback_handler.callbacks.insert(0, _Window())

    def summary(self) -> dict[str, Any]:
        steps = max(self.recorded_steps, 1)
        return {
            "steps": self.recorded_steps,
            "per_step": round(sum(self.sites.values()) / steps, 1),
            "sites": [
                {"per_step": round(count / steps, 2), "stack": list(stack)}
                for stack, count in self.sites.most_common()
            ],
        }
