"""bench/diagnostics/memory_at_peak.py: the peak of a recorded allocation trace and what was alive at it."""

from __future__ import annotations

from bench.diagnostics.memory_at_peak import summarize

MIB = 2**20


def frame(filename: str, line: int, name: str) -> dict:
    return {"filename": filename, "line": line, "name": name}


def test_the_blocks_alive_at_the_peak_are_named_by_their_own_code() -> None:
    weights = [frame("/x/torch/nn/functional.py", 1, "linear"), frame("/w/worker/layer.py", 7, "forward")]
    graph = [
        frame("/tmp/torchinductor_root/ab/cab.py", 120, "call"),
        frame("/y/torch/_dynamo/eval_frame.py", 3, "f"),
    ]
    trace = [
        {"action": "alloc", "addr": 1, "size": 100 * MIB, "frames": weights},
        {"action": "alloc", "addr": 2, "size": 50 * MIB, "frames": graph},
        {"action": "alloc", "addr": 3, "size": 30 * MIB, "frames": graph},
        {"action": "free_requested", "addr": 1, "size": 100 * MIB},
        {"action": "free_completed", "addr": 1, "size": 100 * MIB},
        # later and lower than the peak of 180 MiB: not what is reported
        {"action": "alloc", "addr": 4, "size": 90 * MIB, "frames": weights},
        {"action": "free_completed", "addr": 999, "size": 5 * MIB},  # made before recording
    ]
    summary = summarize(trace, before_gib=5.0)
    assert summary["peak_gib"] == round(5.0 + 180 / 1024, 3)
    assert summary["recorded_events"] == len(trace)
    assert summary["alive_at_peak"] == [
        {"where": "layer.py:7 forward", "mib": 100.0, "blocks": 1, "largest_mib": 100.0},
        {"where": "cab.py:120 call", "mib": 80.0, "blocks": 2, "largest_mib": 50.0},
    ]
