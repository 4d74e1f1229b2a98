"""The library versions whose internals the fast path copies, checked before a run trains.

Two features reproduce a library's own code to take its waits out: "async" copies trl's
SFTTrainer.compute_loss and log (unread_metrics.py) and bitsandbytes' Optimizer8bit.step
(queued_optimizer.py); "dequant" reproduces bitsandbytes' NF4 dequantization in torch ops
(dequant.py). A copy is only right for the release it was taken from, so a worker with
another release refuses the feature at the run's start, saying which and what to do,
instead of training differently from the reference without a word.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.acceleration_plan import AccelerationPlan

# feature flag -> {distribution: the major.minor release its copy was taken from}
COPIED_INTERNALS: dict[str, dict[str, str]] = {
    "async": {"trl": "1.16", "bitsandbytes": "0.50"},
    "dequant": {"bitsandbytes": "0.50"},
}


class CopiedInternalsMismatch(RuntimeError):
    """A fast-path feature's copied library code does not match the installed library."""


def release(distribution: str) -> str | None:
    """The installed major.minor of `distribution`, None if it is not installed."""
    try:
        return ".".join(version(distribution).split(".")[:2])
    except PackageNotFoundError:
        return None


def check_copied_internals(plan: AccelerationPlan) -> None:
    """Raise CopiedInternalsMismatch if a feature the plan turns on copies another release."""
    active = {"async": plan.asynchronous_steps, "dequant": plan.dequantize_in_graph}
    for feature, copied in COPIED_INTERNALS.items():
        if not active[feature]:
            continue
        for distribution, expected in copied.items():
            installed = release(distribution)
            if installed is not None and installed != expected:
                raise CopiedInternalsMismatch(
                    f"the fast path's \"{feature}\" feature reproduces {distribution} {expected}'s own code, "
                    f"and this worker has {distribution} {installed}: install {distribution}=={expected}.* "
                    f'on the worker, or train with trainer "reference"'
                )
