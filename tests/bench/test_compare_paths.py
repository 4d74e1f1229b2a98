"""bench/compare_paths.py: how two paths' losses are compared, and the one-ulp control."""

from __future__ import annotations

import math

import pytest
import torch

from bench.compare_paths import interval_means, lora_a_nudged_by_one_ulp, loss_agreement


def test_interval_means_are_what_the_trainer_logs_every_n_steps():
    losses = {step: float(step) for step in range(1, 13)}
    assert interval_means(losses, 5) == {5: 3.0, 10: 8.0}  # steps 11-12 make no full interval


def test_loss_agreement_finds_the_first_step_past_two_percent_after_step_10():
    reference = {step: 2.0 for step in range(1, 201)}
    other = dict(reference)
    other[5] = 4.0  # steps up to 10 are not compared
    other[60] = 2.02  # 1%: within
    other[120] = 2.1  # 5%: the first past 2%
    other[170] = 1.0  # 50%
    agreement = loss_agreement(reference, other, every=5)
    assert agreement["first_step_past_2_percent"] == 120
    assert agreement["max_relative_difference_after_step_10"] == pytest.approx(0.5)
    windows = agreement["windows"]
    assert list(windows) == ["11..50", "51..100", "101..150", "151..200"]
    assert windows["11..50"] == {"largest": 0.0, "median": 0.0, "share_within_2_percent": 1.0}
    assert windows["51..100"]["largest"] == pytest.approx(0.01)
    assert windows["101..150"]["share_within_2_percent"] == pytest.approx(49 / 50, abs=1e-3)
    # The demo logs every 5 steps: step 170's 50% is a 10% gap in the mean of 166-170.
    assert agreement["max_relative_difference_of_5_step_means_after_step_10"] == pytest.approx(0.1)


def test_identical_losses_agree_everywhere():
    reference = {step: 1.0 / step for step in range(1, 31)}
    agreement = loss_agreement(reference, dict(reference), every=5)
    assert agreement["first_step_past_2_percent"] is None
    assert agreement["max_relative_difference_after_step_10"] == 0.0


def test_the_control_moves_every_lora_a_weight_one_ulp_up_and_nothing_else():
    import peft
    from peft import LoraConfig

    def adapter(seed: int):
        torch.manual_seed(seed)
        base = torch.nn.Sequential()
        base.add_module("proj", torch.nn.Linear(8, 8))
        return peft.get_peft_model(base, LoraConfig(r=2, target_modules=["proj"]))

    original = peft.get_peft_model
    plain = dict(adapter(0).named_parameters())
    with lora_a_nudged_by_one_ulp():
        nudged = dict(adapter(0).named_parameters())
    assert peft.get_peft_model is original  # restored on the way out

    lora_a = [name for name in plain if "lora_A" in name]
    assert lora_a
    for name, parameter in plain.items():
        if name in lora_a:
            expected = torch.nextafter(parameter, torch.full_like(parameter, math.inf))
            assert torch.equal(nudged[name], expected) and not torch.equal(nudged[name], parameter)
        else:
            assert torch.equal(nudged[name], parameter)


def test_a_control_that_nudged_nothing_is_an_error():
    with pytest.raises(RuntimeError, match="nothing was nudged"), lora_a_nudged_by_one_ulp():
        pass
