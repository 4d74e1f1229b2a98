"""worker/training/acceleration/queued_optimizer.py: bitsandbytes' updates queued without synchronizes."""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch

from worker.training.acceleration import queued_optimizer
from worker.training.acceleration.queued_optimizer import queue_updates, updates_at_once


def adapters_like(seed: int = 0) -> list[torch.nn.Parameter]:
    """LoRA-shaped parameters, over bitsandbytes' 1e5-element threshold for paged state."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(64, 2048), (2048, 64), (64, 2048), (2048, 64), (8,)]
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]


def train(parameters: list[torch.nn.Parameter], optimizer, steps: int = 4) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for parameter in parameters:
            parameter.grad = torch.randn(parameter.shape, generator=generator)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
@pytest.mark.parametrize("optimizer_class", [bnb.optim.PagedAdamW32bit, bnb.optim.AdamW8bit])
def test_the_same_updates_without_a_synchronize(monkeypatch, optimizer_class) -> None:
    import bitsandbytes.optim.optimizer

    synchronized = {"bitsandbytes": 0, "loraboard": 0}
    monkeypatch.setattr(
        bitsandbytes.optim.optimizer,
        "sync_gpu",
        lambda tensor: synchronized.__setitem__("bitsandbytes", synchronized["bitsandbytes"] + 1),
    )
    monkeypatch.setattr(
        queued_optimizer,
        "_wait_for_the_device",
        lambda: synchronized.__setitem__("loraboard", synchronized["loraboard"] + 1),
    )
    theirs, ours = adapters_like(), adapters_like()
    their_optimizer = optimizer_class(theirs, lr=2e-4, weight_decay=0.001)
    our_optimizer = optimizer_class(ours, lr=2e-4, weight_decay=0.001)
    assert queue_updates(our_optimizer) and queue_updates(our_optimizer)  # twice: one subclass
    assert isinstance(our_optimizer, optimizer_class)
    assert type(our_optimizer).__name__ == f"Queued{optimizer_class.__name__}"

    train(theirs, their_optimizer, steps=4)
    their_synchronizes = synchronized["bitsandbytes"]
    assert their_synchronizes >= 4  # bitsandbytes' own steps wait for the device, every step
    train(ours, our_optimizer, steps=4)

    for their_parameter, our_parameter in zip(theirs, ours, strict=True):
        assert torch.equal(their_parameter, our_parameter)
    # ours not once in four steps: neither bitsandbytes' wait nor Loraboard's
    assert synchronized == {"bitsandbytes": their_synchronizes, "loraboard": 0}

    for their_values, our_values in zip(
        their_optimizer.state.values(), our_optimizer.state.values(), strict=True
    ):
        assert their_values.keys() == our_values.keys()
        for key, value in their_values.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(our_values[key])), key

    # Reading or replacing the states (a checkpoint) waits for the queued updates first, once.
    our_state = our_optimizer.state_dict()
    assert synchronized["loraboard"] == 1
    our_optimizer.load_state_dict(our_state)
    assert synchronized["loraboard"] == 2


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
def test_one_update_for_all_tensors_and_checkpoints_in_bitsandbytes_layout(monkeypatch) -> None:
    import bitsandbytes.functional

    launches = []
    update = bitsandbytes.functional.optimizer_update_32bit
    monkeypatch.setattr(
        bitsandbytes.functional,
        "optimizer_update_32bit",
        lambda *a, **k: launches.append(a[1].numel()) or update(*a, **k),
    )
    theirs, ours = adapters_like(), adapters_like()
    their_optimizer = bnb.optim.PagedAdamW32bit(theirs, lr=2e-4, weight_decay=0.001)
    our_optimizer = bnb.optim.PagedAdamW32bit(ours, lr=2e-4, weight_decay=0.001)
    queue_updates(our_optimizer)
    train(theirs, their_optimizer, steps=2)
    launches.clear()
    train(ours, our_optimizer, steps=2)
    assert launches == [sum(p.numel() for p in ours)] * 2  # one update a step, over every tensor

    # A checkpoint of ours loads into bitsandbytes' own optimizer and back, and training goes on the same.
    checkpoint = our_optimizer.state_dict()
    assert [state["step"] for state in checkpoint["state"].values()] == [2] * len(ours)
    restored = bnb.optim.PagedAdamW32bit(ours, lr=2e-4, weight_decay=0.001)
    restored.load_state_dict(checkpoint)
    queue_updates(restored)
    restored.load_state_dict(their_optimizer.state_dict())
    train(theirs, their_optimizer, steps=2)
    train(ours, restored, steps=2)
    for their_parameter, our_parameter in zip(theirs, ours, strict=True):
        assert torch.equal(their_parameter, our_parameter)
    for their_values, our_values in zip(their_optimizer.state.values(), restored.state.values(), strict=True):
        assert their_values["step"] == our_values["step"] == 4
        assert torch.equal(their_values["state1"], our_values["state1"])
        assert torch.equal(their_values["state2"], our_values["state2"])


def test_other_kernels_keep_their_per_tensor_updates() -> None:
    theirs, ours = adapters_like(), adapters_like()
    their_optimizer, our_optimizer = bnb.optim.Lion32bit(theirs), bnb.optim.Lion32bit(ours)
    queue_updates(our_optimizer)
    train(theirs, their_optimizer, steps=2)
    train(ours, our_optimizer, steps=2)
    assert "_loraboard_group_states" not in our_optimizer.__dict__  # no update at once was made
    for their_parameter, our_parameter in zip(theirs, ours, strict=True):
        assert torch.equal(their_parameter, our_parameter)
    # AdEMAMix is a two-state "adam"-family optimizer with an update_step of its own.
    parameters = adapters_like()
    for parameter in parameters:
        parameter.grad = torch.zeros_like(parameter)
    ademamix, adamw = bnb.optim.AdEMAMix32bit(parameters), bnb.optim.AdamW32bit(parameters)
    assert not updates_at_once(ademamix, ademamix.param_groups[0])
    assert updates_at_once(adamw, adamw.param_groups[0])


def test_the_step_keeps_torchs_hooks() -> None:
    parameters = adapters_like()
    optimizer = bnb.optim.AdamW8bit(parameters)
    queue_updates(optimizer)
    calls = []
    optimizer.register_step_pre_hook(lambda *args: calls.append("pre"))
    optimizer.register_step_post_hook(lambda *args: calls.append("post"))
    train(parameters, optimizer, steps=1)
    assert calls == ["pre", "post"]


def test_other_optimizers_are_left_alone() -> None:
    optimizer = torch.optim.AdamW(adapters_like())
    assert not queue_updates(optimizer)
    assert type(optimizer) is torch.optim.AdamW
