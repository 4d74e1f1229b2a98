"""The "async" feature's pieces together (acceleration.py), on a real trl trainer on CPU.

The planner turns "async" on for CUDA only; here its Acceleration is built by hand so
that the same code trains the demo model on CPU, with the recipe's paged_adamw_32bit
(bitsandbytes falls back to unpaged states on CPU), against the same trainer without it.
"""

from __future__ import annotations

import pytest

from tests.training_support import models_dir  # noqa: F401  (fixture)
from worker.training.acceleration import Acceleration


def _train(models_dir, tmp_path, name: str, acceleration: Acceleration | None):  # noqa: F811
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    from app.run_config import DEMO_MODEL_ID
    from worker.training.model_loading import load_tokenizer

    set_seed(0)
    path = str(models_dir / DEMO_MODEL_ID)
    model = AutoModelForCausalLM.from_pretrained(path)
    if acceleration is not None:
        model = acceleration.prepare_model(model)
    data = Dataset.from_list(
        [{"prompt": "word " * (1 + i % 5), "completion": " answer" * (1 + i % 3)} for i in range(32)]
    )
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=str(tmp_path / name),
            per_device_train_batch_size=4,
            max_steps=8,
            logging_steps=4,
            learning_rate=1e-3,
            optim="paged_adamw_32bit",
            max_grad_norm=0.3,
            include_num_input_tokens_seen="non_padding",
            logging_nan_inf_filter=acceleration is None,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            seed=0,
            dataloader_pin_memory=False,
        ),
        train_dataset=data,
        processing_class=load_tokenizer(path),
    )
    if acceleration is not None:
        trainer = acceleration.prepare_training(trainer)
    trainer.train()
    return trainer


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
def test_async_trains_and_logs_what_the_recipe_does(models_dir, tmp_path) -> None:  # noqa: F811
    theirs = _train(models_dir, tmp_path, "recipe", None)
    ours = _train(models_dir, tmp_path, "async", Acceleration(asynchronous_steps=True))

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
