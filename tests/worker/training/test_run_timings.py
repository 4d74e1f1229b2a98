"""RunTimings' record of a compiled run: the graphs made and where compiling went."""

from __future__ import annotations

import torch

from worker.training.reporting import MemoryReporter
from worker.training.run_timings import RunTimings
from worker.training.trainer import _compile_seconds


def test_torchs_compile_timers_are_read_and_the_short_stages_left_out() -> None:
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: torch.sin(x) * 2, backend="eager")
    compiled(torch.randn(8))
    every_stage = _compile_seconds(at_least_s=0.0)
    assert every_stage and all(isinstance(name, str) and value >= 0 for name, value in every_stage.items())
    assert _compile_seconds(at_least_s=1e9) == {}


def test_a_compiled_runs_timings_hold_its_graphs_and_compile_stages() -> None:
    reporter = MemoryReporter()
    timings = RunTimings(reporter)
    timings.step(0.5, 100)
    timings.training_done(None, compiled_graphs=1, compile_seconds={"bytecode_tracing": 3.2})
    published = reporter.runtime_values["timings"]
    assert published["compiled_graphs"] == 1 and published["compile_s"] == {"bytecode_tracing": 3.2}
