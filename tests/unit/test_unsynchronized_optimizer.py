"""bitsandbytes' optimizers synchronizing once a step (worker/training/unsynchronized_optimizer.py)."""

from __future__ import annotations

import pytest

bnb = pytest.importorskip("bitsandbytes")

import torch  # noqa: E402

from worker.training.unsynchronized_optimizer import (  # noqa: E402
    unsynchronize,
    unsynchronize_trainer_optimizer,
)


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
def test_the_same_updates_with_one_synchronize_a_step(monkeypatch, optimizer_class) -> None:
    import bitsandbytes.optim.optimizer
    import bitsandbytes.utils

    synchronized: dict[str, int] = {"bitsandbytes": 0, "loraboard": 0}

    def counting(name: str):
        def sync_gpu(tensor: torch.Tensor) -> None:
            synchronized[name] += 1

        return sync_gpu

    # bitsandbytes' step uses the name it imported; ours imports it at each step
    monkeypatch.setattr(bitsandbytes.optim.optimizer, "sync_gpu", counting("bitsandbytes"))
    monkeypatch.setattr(bitsandbytes.utils, "sync_gpu", counting("loraboard"))
    theirs, ours = adapters_like(), adapters_like()
    their_optimizer = optimizer_class(theirs, lr=2e-4, weight_decay=0.001)
    our_optimizer = optimizer_class(ours, lr=2e-4, weight_decay=0.001)
    assert unsynchronize(our_optimizer)
    assert isinstance(our_optimizer, optimizer_class)

    train(theirs, their_optimizer)
    train(ours, our_optimizer)

    for their_parameter, our_parameter in zip(theirs, ours, strict=True):
        assert torch.equal(their_parameter, our_parameter)
    for their_state, our_state in zip(
        their_optimizer.state.values(), our_optimizer.state.values(), strict=True
    ):
        assert their_state.keys() == our_state.keys()
        for key, value in their_state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(our_state[key])), key
    assert synchronized["bitsandbytes"] == 4 * len(theirs) + (4 if their_optimizer.is_paged else 0)
    assert synchronized["loraboard"] == 4  # once a step


def test_the_step_keeps_torchs_hooks() -> None:
    parameters = adapters_like()
    optimizer = bnb.optim.AdamW8bit(parameters)
    unsynchronize(optimizer)
    calls = []
    optimizer.register_step_pre_hook(lambda *args: calls.append("pre"))
    optimizer.register_step_post_hook(lambda *args: calls.append("post"))
    train(parameters, optimizer, steps=1)
    assert calls == ["pre", "post"]


def test_other_optimizers_are_left_alone() -> None:
    optimizer = torch.optim.AdamW(adapters_like())
    assert not unsynchronize(optimizer)
    assert type(optimizer) is torch.optim.AdamW


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
def test_the_trainer_creates_the_recipes_optimizer_unsynchronized(tmp_path) -> None:
    from transformers import Trainer, TrainingArguments

    model = torch.nn.Sequential(torch.nn.Linear(512, 256), torch.nn.Linear(256, 512))
    arguments = TrainingArguments(
        output_dir=str(tmp_path), optim="paged_adamw_32bit", use_cpu=True, report_to=[]
    )
    trainer = Trainer(model=model, args=arguments)
    unsynchronize_trainer_optimizer(trainer)
    trainer.create_optimizer()
    assert isinstance(trainer.optimizer, bnb.optim.optimizer.Optimizer8bit)
    assert type(trainer.optimizer).__name__.startswith("Unsynchronized")
