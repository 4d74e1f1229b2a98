"""What is alive at the peak of GPU memory: the bench's `<variant>@memory` runs.

torch.cuda.memory._record_memory_history keeps every allocation and free with the Python
stack that made it; replaying that trace finds the moment allocated memory peaked and
the blocks alive then. Blocks made before recording began (the model) are only counted,
as `before_gib`. Recording stacks slows the CPU, so a recorded run's speed is not a
measurement; the bench records in a run of its own.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

MAX_ENTRIES = 2_000_000

# Frames of these libraries say how, not where, a block was made: skipped when naming it.
_PLUMBING = ("/torch/", "/contextlib.py", "/functools.py", "/threading.py")


def start_recording() -> float:
    """Start recording allocations; returns the GiB already allocated."""
    import torch

    torch.cuda.memory._record_memory_history(max_entries=MAX_ENTRIES, stacks="python")
    return torch.cuda.memory_allocated() / 2**30


def stop_and_summarize(before_gib: float, top: int = 25) -> dict[str, Any]:
    import torch

    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    return summarize(snapshot["device_traces"][torch.cuda.current_device()], before_gib, top)


def summarize(trace: list[dict[str, Any]], before_gib: float, top: int = 25) -> dict[str, Any]:
    """The peak of a device trace and the blocks alive at it, largest groups first."""
    live: dict[int, dict[str, Any]] = {}
    current = peak = 0
    at_peak: list[dict[str, Any]] = []
    for event in trace:
        action = event["action"]
        if action == "alloc":
            live[event["addr"]] = event
            current += event["size"]
            if current > peak:
                peak = current
                at_peak = list(live.values())
        elif action == "free_completed" and event["addr"] in live:
            current -= live.pop(event["addr"])["size"]
    groups: dict[str, list[int]] = defaultdict(list)
    for event in at_peak:
        groups[_where(event.get("frames", []))].append(event["size"])
    largest = sorted(groups.items(), key=lambda item: -sum(item[1]))[:top]
    return {
        "before_gib": round(before_gib, 3),
        "peak_gib": round(before_gib + peak / 2**30, 3),
        "recorded_events": len(trace),
        "alive_at_peak": [
            {
                "where": where,
                "mib": round(sum(sizes) / 2**20, 1),
                "blocks": len(sizes),
                "largest_mib": round(max(sizes) / 2**20, 1),
            }
            for where, sizes in largest
        ],
    }


def _where(frames: list[dict[str, Any]]) -> str:
    """The innermost frames outside torch's plumbing: where the block was asked for."""
    chosen = [f for f in frames if not any(part in f["filename"] for part in _PLUMBING)][:2]
    if not chosen:
        chosen = frames[:1]
    return " < ".join(f"{f['filename'].rsplit('/', 1)[-1]}:{f['line']} {f['name']}" for f in chosen) or "?"
