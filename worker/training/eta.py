"""Time left in a training run, from the steps timed so far.

Why not "mean time per step x steps left": with group_by_length (the recipe's
default) the Trainer puts the longest batches first and sorts each megabatch of
50 batches longest-first, so the first 20 steps are the slowest of the run: that
estimate comes out far too long (docs/performance.md, "ETA"). The first steps also
pay one-off costs (torch.compile, cuDNN plans, allocator warm-up).

So a step's time is modelled as a fixed part plus a part per real token,
seconds = a + b * tokens, fitted by least squares to the steps of this attempt
after dropping outliers (a step over 3x the median: compilation, a recompile for a
new shape). The tokens left are known from the data, so

    ETA = a * steps_left + b * tokens_left.

Where the fit is unusable (too few steps, too little spread in tokens, a negative
coefficient) it falls back to the mean time of the kept steps x steps left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import mean, median

OUTLIER_FACTOR = 3.0  # a step this many times the median is a one-off (compilation), not the pace
MIN_STEPS_FOR_FIT = 5
MIN_TOKEN_SPREAD = 0.05  # relative standard deviation of tokens a step below which a and b are not separable


@dataclass(frozen=True)
class StepTime:
    seconds: float
    tokens: int


def pace_steps(steps: Sequence[StepTime]) -> list[StepTime]:
    """The steps that show the run's pace: one-off slow steps (over 3x the median) dropped."""
    if not steps:
        return []
    typical = median(step.seconds for step in steps)
    return [step for step in steps if step.seconds <= OUTLIER_FACTOR * typical]


def fit_step_time(steps: Sequence[StepTime]) -> tuple[float, float] | None:
    """(a, b) of seconds = a + b * tokens by least squares; None where the data cannot separate them."""
    if len(steps) < MIN_STEPS_FOR_FIT:
        return None
    tokens_mean = mean(step.tokens for step in steps)
    seconds_mean = mean(step.seconds for step in steps)
    spread = sum((step.tokens - tokens_mean) ** 2 for step in steps)
    if tokens_mean <= 0 or (spread / len(steps)) ** 0.5 < MIN_TOKEN_SPREAD * tokens_mean:
        return None
    slope = sum((step.tokens - tokens_mean) * (step.seconds - seconds_mean) for step in steps) / spread
    intercept = seconds_mean - slope * tokens_mean
    if slope < 0 or intercept < 0:
        return None
    return intercept, slope


def remaining_seconds(steps: Sequence[StepTime], steps_left: int, tokens_left: int | None) -> float | None:
    """Seconds until the last step ends; None before any step was timed."""
    kept = pace_steps(steps)
    if not kept:
        return None
    steps_left = max(steps_left, 0)
    fit = fit_step_time(kept) if tokens_left is not None else None
    if fit is None or tokens_left is None:
        return mean(step.seconds for step in kept) * steps_left
    per_step, per_token = fit
    return per_step * steps_left + per_token * max(tokens_left, 0)
