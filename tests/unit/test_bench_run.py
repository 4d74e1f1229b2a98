"""bench/run_bench.py end to end on CPU (--tiny): a variant's JSON carries the host time
per phase of its timed steps, and a profiled variant the real tokens of its profiled steps."""

from __future__ import annotations

import json

from bench import run_bench
from bench.step_phases import PHASES


def test_a_tiny_run_records_phases_and_the_profiled_steps_tokens(tmp_path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--tiny", "--variants", "reference", "--steps", "5", "--warmup", "2", "--profile", "reference"]
    assert run_bench.main([*argv, "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["timed_steps"] == "3..5"
    phases = result["host_ms_per_phase"]
    assert list(phases) == list(PHASES) and phases["forward"] > 0 and phases["backward"] > 0
    assert sum(phases.values()) <= 1e3 * result["s_per_step"] * 1.5  # medians of the same steps
    tokens = result["profile"]["real_tokens_per_step"]
    assert len(tokens) == result["profile"]["steps"] == 3 and all(t > 0 for t in tokens)
