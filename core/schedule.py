"""Derived schedule values and the learning rate at each step (pure Python, no torch).

Shown live in the form and drawn on the dashboard's LR chart, so the arithmetic
here must be the Trainer's own (checked against a real SFTTrainer in
tests/core/test_schedule.py). docs/parameters.md gives the formulas:

    effective batch        = per_device_train_batch_size x GPUs x gradient_accumulation_steps
    micro-batches / epoch  = ceil(samples / (per_device_train_batch_size x GPUs))
    steps / epoch          = ceil(micro-batches / gradient_accumulation_steps)
    total steps            = max_steps if max_steps > 0 else ceil(epochs x steps / epoch)
    warm-up steps          = ceil(warmup_ratio x total steps)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.run_config import RunConfig


def derive_schedule(config: RunConfig, num_samples: int, num_gpus: int = 1) -> dict[str, int]:
    micro_batch = config.per_device_train_batch_size * num_gpus
    micro_batches_per_epoch = math.ceil(num_samples / micro_batch)
    # At least one step, as the Trainer does for a dataset smaller than one accumulation.
    steps_per_epoch = max(math.ceil(micro_batches_per_epoch / config.gradient_accumulation_steps), 1)
    if config.max_steps > 0:
        total_steps = config.max_steps
    else:
        total_steps = math.ceil(config.num_train_epochs * steps_per_epoch)
    # total x ratio, in this order: the float product the Trainer rounds up (0.05 x 600 rounds to 31).
    warmup_steps = math.ceil(total_steps * config.warmup_ratio)
    return {
        "num_samples": num_samples,
        "num_gpus": num_gpus,
        "effective_batch_size": micro_batch * config.gradient_accumulation_steps,
        "micro_batches_per_epoch": micro_batches_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "warmup_steps": warmup_steps,
    }


def lr_at(step: int, config: RunConfig, total_steps: int, warmup_steps: int) -> float | None:
    """The learning rate of optimizer step `step` (1-based): the value the Trainer logs at that step.

    Step s runs with the scheduler advanced s - 1 times, so with t = s - 1:
    warm-up lr0 t / w, then cosine lr0 x 0.5 (1 + cos(pi (t - w) / (T - w))) or linear lr0 (T - t) / (T - w).
    None for a scheduler type this function does not draw (the chart then shows only the logged values).
    """
    if step < 1:
        raise ValueError(f"optimizer steps are counted from 1, got {step}")
    lr0 = config.learning_rate
    kind = config.lr_scheduler_type
    t = step - 1
    if kind == "constant":
        return lr0
    if kind in ("linear", "cosine", "constant_with_warmup") and t < warmup_steps:
        return lr0 * t / max(1, warmup_steps)
    decay_steps = max(1, total_steps - warmup_steps)
    if kind == "constant_with_warmup":
        return lr0
    if kind == "linear":
        return lr0 * max(0.0, (total_steps - t) / decay_steps)
    if kind == "cosine":
        return lr0 * max(0.0, 0.5 * (1.0 + math.cos(math.pi * (t - warmup_steps) / decay_steps)))
    return None
