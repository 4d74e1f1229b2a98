"""The worker's ETA (worker/training/eta.py): a step's time fitted to its tokens."""

from __future__ import annotations

import pytest

from worker.training.eta import StepTime, fit_step_time, pace_steps, remaining_seconds


def paced(tokens: list[int], per_step: float = 0.1, per_token: float = 0.0002) -> list[StepTime]:
    return [StepTime(per_step + per_token * count, count) for count in tokens]


def test_longest_batches_first_do_not_make_the_eta_long() -> None:
    # group_by_length: the first 20 steps are the longest of the run (4,000 tokens down to
    # 1,700); the 230 left average 1,200 tokens. Steps-only pacing overestimates by ~50%.
    first = paced([4000 - 115 * i for i in range(20)])
    tokens_left = 230 * 1200
    truth = 230 * 0.1 + 0.0002 * tokens_left
    assert remaining_seconds(first, 230, tokens_left) == pytest.approx(truth, rel=1e-6)
    steps_only = remaining_seconds(first, 230, None)
    assert steps_only is not None and steps_only > 1.4 * truth


def test_compilation_steps_are_not_the_pace() -> None:
    steady = paced([2900, 2800, 2700, 2600, 2500, 2400])
    first_compile, recompile = StepTime(80.0, 3000), StepTime(12.0, 2300)
    kept = pace_steps([first_compile, *steady, recompile])
    assert kept == steady  # the compiling steps dropped, every steady one kept, in order
    fit = fit_step_time(kept)
    assert fit == pytest.approx((0.1, 0.0002), rel=1e-6)


def test_without_token_spread_or_tokens_the_mean_step_time_is_used() -> None:
    same_size = paced([1000] * 10)
    assert fit_step_time(same_size) is None
    assert remaining_seconds(same_size, 50, 50_000) == pytest.approx(50 * 0.3)
    assert remaining_seconds(paced([900, 1100, 1000, 950, 1050]), 10, None) == pytest.approx(3.0)


def test_nonsense_fits_fall_back_and_nothing_timed_gives_none() -> None:
    # time falling with tokens (noise): no negative per-token cost
    noisy = [StepTime(1.0 - 0.0001 * count, count) for count in (1000, 2000, 3000, 4000, 5000)]
    assert fit_step_time(noisy) is None
    assert remaining_seconds([], 10, 1000) is None
    assert remaining_seconds(paced([1000, 2000, 3000, 4000, 5000]), 0, 0) == 0.0
