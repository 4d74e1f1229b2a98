"""worker/training/unread_metrics.py: trl's metrics and the token count, read at log steps only."""

from __future__ import annotations

import pytest
import torch

from tests.training_support import demo_sft_trainer, models_dir  # noqa: F401  (fixture)
from worker.training.unread_metrics import CountingCollator, count_input_tokens, keep_metrics_on_device


def _trainer(models_dir, tmp_path, name: str, **overrides):  # noqa: F811
    return demo_sft_trainer(models_dir, tmp_path / name, **overrides)


def _logged(trainer) -> list[dict]:
    return [row for row in trainer.state.log_history if "loss" in row]


def test_logs_what_trl_logs_without_reading_the_device_each_step(models_dir, tmp_path, monkeypatch):  # noqa: F811
    from transformers import Trainer

    theirs = _trainer(models_dir, tmp_path, "trl")
    theirs.train()

    reads = {"metrics": 0, "tokens": 0}
    original_track = Trainer._track_num_input_tokens

    def counted_track(self, inputs):
        reads["tokens"] += 1
        return original_track(self, inputs)

    monkeypatch.setattr(Trainer, "_track_num_input_tokens", counted_track)
    ours = keep_metrics_on_device(_trainer(models_dir, tmp_path, "ours"))
    assert type(ours).__name__ == "UnreadMetricsSFTTrainer"
    unread_between_logs = []
    original_log = type(ours).log

    def spying_log(self, logs, start_time=None):
        unread_between_logs.append([type(v) for v in self._metrics["train"].get("entropy", [])])
        return original_log(self, logs, start_time)

    monkeypatch.setattr(type(ours), "log", spying_log)
    ours.train()

    their_rows, our_rows = _logged(theirs), _logged(ours)
    assert [row["step"] for row in our_rows] == [row["step"] for row in their_rows] == [3, 6]
    for their_row, our_row in zip(their_rows, our_rows, strict=True):
        for key in ("loss", "grad_norm", "learning_rate", "entropy", "mean_token_accuracy"):
            assert our_row[key] == pytest.approx(their_row[key], rel=1e-6), key
        assert our_row["num_tokens"] == their_row["num_tokens"]
        assert our_row["num_input_tokens_seen"] == their_row["num_input_tokens_seen"]
        assert all(isinstance(value, (int, float)) for value in our_row.values())
    # Between logs the per-step figures stayed tensors (never read), three a log.
    assert unread_between_logs[:2] == [[torch.Tensor] * 3, [torch.Tensor] * 3]
    assert reads["tokens"] == 0  # every step's count came from the host
    assert ours.state.num_input_tokens_seen == theirs.state.num_input_tokens_seen > 0


def test_evaluation_and_other_losses_stay_trls(models_dir, tmp_path) -> None:  # noqa: F811
    trainer = keep_metrics_on_device(_trainer(models_dir, tmp_path, "dft", loss_type="dft", max_steps=3))
    trainer.train()
    # trl's own compute_loss read its metrics every step: floats, not tensors
    assert _logged(trainer)[-1]["mean_token_accuracy"] >= 0
    assert keep_metrics_on_device(trainer) is trainer and type(trainer).__name__ == "UnreadMetricsSFTTrainer"


def test_token_counts_follow_transformers_modes() -> None:
    batch = {
        "input_ids": torch.tensor([[5, 6, 0], [7, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]]),
    }
    assert count_input_tokens(batch, "non_padding", "input_ids", 0) == 3
    assert count_input_tokens(batch, "all", "input_ids", 0) == 6
    without_mask = {"input_ids": batch["input_ids"]}
    assert count_input_tokens(without_mask, "non_padding", "input_ids", 0) == 3
    assert count_input_tokens(without_mask, "non_padding", "input_ids", None) == 6
    assert count_input_tokens(without_mask, "non_padding", "pixel_values", 0) is None


def test_a_count_is_used_only_for_a_batch_of_its_shape() -> None:
    def collate(examples):
        return {"input_ids": torch.ones(len(examples), max(examples), dtype=torch.long)}

    counting = CountingCollator(collate, lambda batch: int(batch["input_ids"].numel()), "input_ids")
    counting([3, 2])  # collated, never trained on (a batch fetched ahead, then training stopped)
    counting([5, 5, 5])
    assert counting.take({"input_ids": torch.ones(3, 5)}) == 15  # the stale count was dropped
    assert counting.take({"input_ids": torch.ones(3, 5)}) is None  # nothing left: transformers counts


def test_a_step_with_a_nan_loss_is_logged_as_transformers_filter_logs_it(models_dir, tmp_path, monkeypatch):  # noqa: F811
    from transformers import Trainer

    steps = {"count": 0}
    original_step = Trainer.training_step

    def nan_at_the_fourth_step(self, model, inputs, num_items_in_batch=None):
        loss = original_step(self, model, inputs, num_items_in_batch)
        steps["count"] += 1
        return loss * float("nan") if steps["count"] % 6 == 4 else loss  # the loss only: training goes on

    monkeypatch.setattr(Trainer, "training_step", nan_at_the_fourth_step)
    theirs = _trainer(models_dir, tmp_path, "trl")  # transformers' filter reads every loss
    theirs.train()
    ours = keep_metrics_on_device(_trainer(models_dir, tmp_path, "ours", logging_nan_inf_filter=False))
    ours.train()

    their_rows, our_rows = _logged(theirs), _logged(ours)
    assert [row["step"] for row in our_rows] == [3, 6]
    for their_row, our_row in zip(their_rows, our_rows, strict=True):
        assert our_row["loss"] == pytest.approx(their_row["loss"], rel=1e-6)
    assert all(row["loss"] == row["loss"] for row in our_rows)  # not NaN: the step was filtered
