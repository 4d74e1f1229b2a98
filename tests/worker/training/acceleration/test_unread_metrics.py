"""acceleration/unread_metrics.py: trl's metrics and the token count, read at log steps only."""

from __future__ import annotations

import pytest
import torch

from tests.training_support import demo_sft_trainer, note_each_training_batch, rows_scored_by_trls_head
from worker.training.acceleration.unread_metrics import (
    BatchFactsCollator,
    count_input_tokens,
    keep_metrics_on_device,
)


def _trainer(models_dir, tmp_path, name: str, **overrides):
    return demo_sft_trainer(models_dir, tmp_path / name, **overrides)


def _logged(trainer) -> list[dict]:
    return [row for row in trainer.state.log_history if "loss" in row]


def test_logs_what_trl_logs_without_reading_the_device_each_step(models_dir, tmp_path, monkeypatch):
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
    # At each log, the figures of every step since the last one are still tensors (never read).
    steps_per_log = ours.args.logging_steps
    assert unread_between_logs[: len(our_rows)] == [[torch.Tensor] * steps_per_log] * len(our_rows)
    assert reads["tokens"] == 0  # every step's count came from the host
    assert ours.state.num_input_tokens_seen == theirs.state.num_input_tokens_seen > 0


def test_evaluation_and_other_losses_stay_trls(models_dir, tmp_path) -> None:
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


def test_facts_are_used_only_for_a_batch_of_their_shape() -> None:
    def collate(examples):
        batch = {"input_ids": torch.ones(len(examples), max(examples), dtype=torch.long)}
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        batch["attention_mask"][0, examples[0] :] = 0  # the first row is padded on the right
        return batch

    noting = BatchFactsCollator(collate, lambda batch: int(batch["attention_mask"].sum()), "input_ids")
    noting([3, 2])  # collated, never trained on (a batch fetched ahead, then training stopped)
    noting([4, 5, 5])
    facts = noting.take({"input_ids": torch.ones(3, 5)})
    assert facts is not None and (facts.tokens, facts.right_padded) == (14, True)  # the stale one dropped
    assert noting.take({"input_ids": torch.ones(3, 5)}) is None  # nothing left: transformers counts


def test_a_step_with_a_nan_loss_is_logged_as_transformers_filter_logs_it(models_dir, tmp_path, monkeypatch):
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


def _fused_head_pass(model, batch):
    """Loss, per-token outputs and every parameter's gradient of one fused-head pass."""
    model.zero_grad()
    outputs = model(**batch, fused_lm_head=True)
    outputs.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return outputs, grads


def test_the_head_scores_every_position_with_trls_values(tiny_llama_dir, monkeypatch) -> None:
    """every_position_scored: no selection of labelled positions, the same values as trl's."""
    import trl.trainer.utils as trl_utils
    from transformers import LlamaForCausalLM

    from tests.tiny_llama import VOCAB
    from worker.training.acceleration.unread_metrics import every_position_scored

    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    input_ids = torch.randint(0, VOCAB, (3, 11), generator=torch.Generator().manual_seed(2))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[2, :4] = -100  # a prompt
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    selected_rows = rows_scored_by_trls_head(monkeypatch)  # trl's way on a GPU, forced here
    selecting, selecting_grads = _fused_head_pass(model, batch)
    with every_position_scored():
        scoring, scoring_grads = _fused_head_pass(model, batch)
    assert trl_utils._use_triton(input_ids.device) is True  # put back after the block

    labelled = int((labels[:, 1:] != -100).sum())
    every_position = input_ids.shape[0] * (input_ids.shape[1] - 1)  # each predicts the next token
    assert labelled < every_position
    assert selected_rows == [labelled, every_position]  # trl's selection, then every position
    torch.testing.assert_close(scoring.loss, selecting.loss, rtol=1e-6, atol=1e-6)
    for field in ("log_probs", "entropy", "is_top1", "label_mask"):
        torch.testing.assert_close(getattr(scoring, field), getattr(selecting, field), rtol=1e-5, atol=1e-6)
    assert scoring.log_probs[~scoring.label_mask].eq(0).all()  # ignored positions add nothing
    assert scoring_grads.keys() == selecting_grads.keys() and len(scoring_grads) > 0
    for name, grad in scoring_grads.items():
        torch.testing.assert_close(grad, selecting_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_training_steps_do_not_select_labelled_positions(models_dir, tmp_path, monkeypatch) -> None:
    scored = rows_scored_by_trls_head(monkeypatch)  # trl would select, as on a GPU
    trainer = keep_metrics_on_device(_trainer(models_dir, tmp_path, "ours", max_steps=3))
    positions = note_each_training_batch(
        monkeypatch, trainer, lambda inputs: inputs["input_ids"].shape[0] * (inputs["input_ids"].shape[1] - 1)
    )
    trainer.train()
    # one scoring a step, of every position of that step's batch
    assert trainer.state.global_step == trainer.args.max_steps
    assert len(scored) == trainer.state.global_step and scored == positions
