"""SeededDropout: the same mask for the same (seed, salt), new masks for each forward."""

from __future__ import annotations

import torch

from worker.training.acceleration.seeded_dropout import SeededDropout, keep_mask, use_seeded_dropout


def test_the_mask_is_a_function_of_seed_salt_and_position() -> None:
    shape = torch.Size((64, 512))
    seed = torch.tensor(1234)
    first = keep_mask(shape, seed, torch.tensor(1), 0.1)
    assert torch.equal(first, keep_mask(shape, seed, torch.tensor(1), 0.1))
    assert not torch.equal(first, keep_mask(shape, seed, torch.tensor(2), 0.1))
    assert not torch.equal(first, keep_mask(shape, torch.tensor(1235), torch.tensor(1), 0.1))
    # the rate holds, and neighbouring elements are not correlated
    assert abs(first.float().mean().item() - 0.9) < 0.005
    rows_agree = (first[:, :-1] == first[:, 1:]).float().mean().item()
    assert abs(rows_agree - (0.9**2 + 0.1**2)) < 0.01


def test_dropout_scales_kept_values_and_is_off_in_eval() -> None:
    dropout = SeededDropout(0.25, torch.tensor(7), salt=3)
    x = torch.ones(1000, 100)
    y = dropout(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    assert torch.equal(dropout.eval()(x), x)


def test_every_lora_dropout_is_replaced_and_each_forward_draws_a_new_seed() -> None:
    class Lora(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lora_dropout = torch.nn.ModuleDict({"default": torch.nn.Dropout(0.1)})
            self.linear = torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.linear(self.lora_dropout["default"](x))

    model = torch.nn.Sequential(Lora(), Lora())
    assert use_seeded_dropout(model) == 2
    first, second = (layer.lora_dropout["default"] for layer in model)
    assert isinstance(first, SeededDropout) and first.seed is second.seed
    assert int(first.salt) != int(second.salt)
    torch.manual_seed(0)
    model(torch.ones(4, 8))
    seed_then = int(first.seed)
    model(torch.ones(4, 8))
    assert int(first.seed) != seed_then
    torch.manual_seed(0)
    model(torch.ones(4, 8))
    assert int(first.seed) == seed_then  # repeatable under a fixed seed


def test_the_hash_stays_out_of_inductors_index_arithmetic() -> None:
    """The position is mixed with the seed before it is multiplied. Multiplied first,
    Inductor folds "arange x 0x61C88647" into its index arithmetic (here C++:
    `1640531527L*x0`, a strided arange); on CUDA, Triton held that in int32 and refused
    to compile the default path ("Scalar 6719617134592 is out of range for type int32")."""
    from torch._inductor.utils import run_and_get_code

    shape = torch.Size((3, 7, 4096))
    torch._dynamo.reset()
    compiled = torch.compile(lambda seed, salt: keep_mask(shape, seed, salt, 0.1), dynamic=True)
    keep, code = run_and_get_code(compiled, torch.tensor(5), torch.tensor(3))
    assert torch.equal(keep, keep_mask(shape, torch.tensor(5), torch.tensor(3), 0.1))
    uses = [line for line in "\n".join(code).splitlines() if str(0x61C88647) in line]
    assert uses, "the multiplier is in the kernel"
    assert not [line for line in uses if f"{0x61C88647}L*" in line or "arange(" in line], uses
