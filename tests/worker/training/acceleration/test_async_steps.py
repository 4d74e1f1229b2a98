"""The "async" feature's pieces together (acceleration.py), on a real trl trainer on CPU.

The planner turns "async" on for CUDA only; here its Acceleration is built by hand so
that the same code trains the demo model on CPU, with the recipe's paged_adamw_32bit
(bitsandbytes falls back to unpaged states on CPU), against the same trainer without it.
"""

from __future__ import annotations

import pytest

from tests.training_support import demo_sft_trainer, sdpa_calls
from worker.training.acceleration import Acceleration


def _train(models_dir, tmp_path, name: str, acceleration: Acceleration | None):
    trainer = demo_sft_trainer(
        models_dir,
        tmp_path / name,
        prepare_model=acceleration.prepare_model if acceleration is not None else None,
        samples=32,
        max_steps=8,
        logging_steps=4,
        optim="paged_adamw_32bit",
        max_grad_norm=0.3,
        logging_nan_inf_filter=acceleration is None,
    )
    if acceleration is not None:
        trainer = acceleration.prepare_training(trainer)
    trainer.train()
    return trainer


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
def test_async_trains_and_logs_what_the_recipe_does(models_dir, tmp_path, monkeypatch) -> None:
    theirs = _train(models_dir, tmp_path, "recipe", None)
    calls = sdpa_calls(monkeypatch)
    plan = Acceleration(asynchronous_steps=True, causal_attention_for_right_padding=True)
    ours = _train(models_dir, tmp_path, "async", plan)
    # trl's batches are padded at the right: causal attention, no mask, the same training
    assert calls and all(mask is None for mask, _ in calls)

    assert ours.model.config._attn_implementation == "loraboard_sdpa"
    assert type(ours).__name__ == "UnreadMetricsSFTTrainer"
    optimizer = ours.optimizer.optimizer  # accelerate's wrapper around bitsandbytes' AdamW
    assert type(optimizer).__name__ == "QueuedAdamW" and optimizer.is_paged
    their_rows = [row for row in theirs.state.log_history if "loss" in row]
    our_rows = [row for row in ours.state.log_history if "loss" in row]
    assert [row["step"] for row in our_rows] == [row["step"] for row in their_rows] == [4, 8]
    for their_row, our_row in zip(their_rows, our_rows, strict=True):
        for key in ("loss", "grad_norm", "entropy", "mean_token_accuracy"):
            assert our_row[key] == pytest.approx(their_row[key], rel=1e-5), key
        for key in ("num_tokens", "num_input_tokens_seen", "learning_rate"):
            assert our_row[key] == their_row[key], key
