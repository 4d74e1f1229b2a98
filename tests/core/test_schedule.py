"""Derived schedule values: the formulas, and the real Trainer agreeing with them."""

from __future__ import annotations

import math

import pytest

from core.run_config import RunConfig
from core.schedule import derive_schedule, lr_at


def config(**overrides) -> RunConfig:
    return RunConfig(**overrides)


def test_formulas_from_parameters_md():
    values = derive_schedule(
        config(per_device_train_batch_size=4, gradient_accumulation_steps=2), 1000, num_gpus=2
    )
    # effective 4 x 2 x 2 = 16; micro-batches ceil(1000 / 8) = 125; steps ceil(125 / 2) = 63
    assert values["effective_batch_size"] == 16
    assert values["micro_batches_per_epoch"] == 125
    assert values["steps_per_epoch"] == 63
    assert values["total_steps"] == 63
    assert values["warmup_steps"] == math.ceil(0.03 * 63) == 2
    assert derive_schedule(config(num_train_epochs=2.5), 10)["total_steps"] == math.ceil(2.5 * 3)
    assert derive_schedule(config(max_steps=7, warmup_ratio=0.5), 10_000)["total_steps"] == 7
    assert derive_schedule(config(max_steps=7, warmup_ratio=0.5), 10_000)["warmup_steps"] == 4
    assert derive_schedule(config(warmup_ratio=0.0), 100)["warmup_steps"] == 0


def test_cosine_linear_constant():
    # Step s runs at the schedule's value after s - 1 scheduler steps.
    cosine = config(learning_rate=1.0, lr_scheduler_type="cosine")
    assert lr_at(1, cosine, 100, 10) == 0.0
    assert lr_at(6, cosine, 100, 10) == pytest.approx(0.5)
    assert lr_at(11, cosine, 100, 10) == pytest.approx(1.0)
    assert lr_at(56, cosine, 100, 10) == pytest.approx(0.5)
    assert lr_at(101, cosine, 100, 10) == pytest.approx(0.0)
    linear = config(learning_rate=1.0, lr_scheduler_type="linear")
    assert lr_at(56, linear, 100, 10) == pytest.approx(0.5)
    assert lr_at(3, config(learning_rate=0.5, lr_scheduler_type="constant"), 100, 10) == 0.5
    assert lr_at(3, config(lr_scheduler_type="polynomial"), 100, 10) is None


class _Seen(Exception):
    pass


@pytest.mark.parametrize(
    "samples, overrides",
    [
        (37, {"per_device_train_batch_size": 4, "num_train_epochs": 1, "warmup_ratio": 0.03}),
        (
            50,
            {
                "per_device_train_batch_size": 3,
                "gradient_accumulation_steps": 4,
                "num_train_epochs": 2.5,
                "warmup_ratio": 0.1,
                "lr_scheduler_type": "linear",
            },
        ),
        (20, {"per_device_train_batch_size": 8, "max_steps": 7, "warmup_ratio": 0.05}),
        (
            600,
            {"per_device_train_batch_size": 32, "num_train_epochs": 32, "warmup_ratio": 0.05},
        ),  # 0.05 x 608
    ],
)
def test_trainer_agrees(models_dir, tmp_path, samples, overrides):
    """Build a real SFTTrainer, stop it as training begins, compare its max_steps, warm-up and LR."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from core.run_config import DEMO_MODEL_ID
    from worker.training.arguments import DeviceInfo, map_arguments
    from worker.training.model_loading import load_tokenizer

    run = config(**overrides)
    seen = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            scheduler = kwargs["lr_scheduler"]
            seen["max_steps"] = state.max_steps
            seen["lrs"] = [
                run.learning_rate * scheduler.lr_lambdas[0](step) for step in range(state.max_steps + 1)
            ]
            seen["warmup"] = args.get_warmup_steps(state.max_steps)
            raise _Seen

    path = str(models_dir / DEMO_MODEL_ID)
    arguments = map_arguments(run, DeviceInfo("cpu", "cpu"), tmp_path)
    data = Dataset.from_list([{"text": "word " * (1 + i % 7)} for i in range(samples)])
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=SFTConfig(**arguments.sft),
        train_dataset=data,
        processing_class=load_tokenizer(path),
        callbacks=[Capture()],
    )
    with pytest.raises(_Seen):
        trainer.train()
    derived = derive_schedule(run, len(trainer.train_dataset))
    assert derived["total_steps"] == seen["max_steps"]
    assert derived["warmup_steps"] == seen["warmup"]
    steps = range(1, seen["max_steps"] + 1)
    ours = [lr_at(step, run, derived["total_steps"], derived["warmup_steps"]) for step in steps]
    assert ours == pytest.approx(seen["lrs"][:-1], abs=1e-12)


def test_lr_at_refuses_step_zero_and_the_planned_curve_never_goes_negative() -> None:
    from app.services.run_views import planned_lr_curve

    cosine = config(learning_rate=1.0, lr_scheduler_type="cosine")
    with pytest.raises(ValueError):
        lr_at(0, cosine, 100, 10)
    steps, values = planned_lr_curve(cosine, {"total_steps": 30, "warmup_steps": 2})
    assert steps[0] == 1 and steps[-1] == 30
    assert min(values) >= 0.0 and max(values) == pytest.approx(1.0)
