"""trl's training metrics, transformers' token count and loss check, read from the GPU at
log steps only.

Every training step, trl's SFTTrainer.compute_loss reads three figures back from the GPU
with .item() (the step's mean entropy, its token accuracy, its token count), and
transformers' loop reads the step's token count again for `num_input_tokens_seen` (the
worker's ETA needs it) and the step's loss for its NaN/inf filter
(`logging_nan_inf_filter`). Each read makes the host wait until the GPU has caught up,
so the host cannot queue the next kernels while the GPU is still busy.

The subclass made here keeps the same figures on the GPU until trl's `log` (every
logging_steps) reads them all at once, and counts the input tokens on the host, from the
batch the collator made on the CPU, before it goes to the device (BatchFacts: also whether
the batch is right-padded, for padding_mask's causal attention). The NaN/inf filter
runs on the GPU instead (with transformers' own left off): a step whose loss is not
finite adds the running mean to the logged loss, as transformers' does. Logged values
are trl's and transformers' own: the same per-step means, averaged the same way
(tests/worker/training/acceleration/test_unread_metrics.py).

trl's fused LM head also makes the host wait, twice a step: on a Triton device it selects
the labelled positions (`hidden_states[mask]`, `labels[mask]`), a shape only the GPU
knows. Here it scores every position instead, as trl does on devices without Triton, and
zeroes the ignored ones after (`every_position_scored`): the same log-probabilities, loss
and gradients, for the LM head arithmetic of the few padded positions, a small part of a
step's per-token work. Kept although its own gain was within the spread
(docs/performance.md, "async"), because a step with no wait lets the host run ahead of
the GPU.

Only the plain case is taken over: training mode, trl's default negative log-likelihood
through its fused LM head, one process. Anything else (evaluation, a custom loss, label
smoothing, DFT, a MoE auxiliary loss, several processes) goes to trl's compute_loss.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from worker.training.acceleration.class_swap import cached_subclass
from worker.training.acceleration.padding_mask import causal_attention_for_right_padding, is_right_padded


def takes_plain_loss(trainer: Any) -> bool:
    """Whether compute_loss below computes exactly what trl's would for a training step."""
    return (
        trainer.compute_loss_func is None
        and trainer.label_smoother is None
        and trainer.args.loss_type == "nll"
        and not trainer.aux_loss_enabled
        and trainer.accelerator.num_processes == 1
    )


def count_input_tokens(batch: Any, mode: Any, main_input_name: str, pad_token_id: int | None) -> int | None:
    """transformers' Trainer._track_num_input_tokens count, on a CPU batch; None where it does not apply."""
    if not isinstance(batch, dict) or main_input_name not in batch:
        return None
    if mode != "non_padding":
        return int(batch[main_input_name].numel())
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    if pad_token_id is not None:
        return int((batch[main_input_name] != pad_token_id).sum())
    return int(batch[main_input_name].numel())


@dataclass(frozen=True)
class BatchFacts:
    """What the host learns of a batch from its CPU copy, kept until the batch is trained on."""

    shape: tuple[int, ...] | None
    tokens: int | None
    """transformers' input token count (count_input_tokens); None where it does not apply."""
    right_padded: bool
    """padding_mask.is_right_padded: causal attention alone trains it as its mask does."""


class BatchFactsCollator:
    """A collator that also notes each batch's BatchFacts on the host, in batch order.

    Facts are kept with their batch's shape, the one thing about a batch on the device
    that the host knows without waiting for it: facts are only used for a batch of their
    shape, so a batch collated but never trained on cannot shift them.
    """

    def __init__(self, collator: Any, count: Any, main_input_name: str) -> None:
        self.collator = collator
        self.count = count
        self.main_input_name = main_input_name
        self.facts: deque[BatchFacts] = deque()

    def __call__(self, examples: Any) -> Any:
        batch = self.collator(examples)
        if isinstance(batch, dict) and self.main_input_name in batch:
            shape = tuple(batch[self.main_input_name].shape)
            self.facts.append(BatchFacts(shape, self.count(batch), is_right_padded(batch)))
        return batch

    def take(self, batch: Any) -> BatchFacts | None:
        """The facts of `batch` (the next one trained on, now on the device); None if unknown."""
        shape = tuple(batch[self.main_input_name].shape) if self.main_input_name in batch else None
        while self.facts:
            facts = self.facts.popleft()
            if facts.shape == shape:
                return facts
        return None


@contextmanager
def every_position_scored() -> Iterator[None]:
    """trl's fused LM head without its selection of the labelled positions, for the block.

    trl picks between the two ways by `_use_triton(device)`, looked up in its utils module
    at each call; its kernels look up their own. A trl without that switch keeps its way:
    the same values, with the waits.
    """
    import trl.trainer.utils as trl_utils

    selects = getattr(trl_utils, "_use_triton", None)
    if selects is None:
        yield
        return
    trl_utils._use_triton = _never_selects  # type: ignore[attr-defined]
    try:
        yield
    finally:
        trl_utils._use_triton = selects  # type: ignore[attr-defined]


def _never_selects(device: Any) -> bool:
    return False


# The mixin's methods use trl's SFTTrainer attributes; to the type checker it is one.
_Trainer: Any = object


class UnreadMetrics(_Trainer):
    """Overrides of trl's SFTTrainer (mixed in before it by keep_metrics_on_device)."""

    _unread_tokens: torch.Tensor | None = None
    _facts_collator: BatchFactsCollator | None = None
    _batch_facts: BatchFacts | None = None
    scores_every_position = True
    """False: trl's head selects the labelled positions (waiting for the GPU), as trl does."""
    attends_right_padding_causally = False
    """True: a right-padded batch's attention gets no mask (padding_mask), so SDPA runs
    its causal flash kernel. Needs the model's attention to be padding_mask.ATTENTION."""

    def compute_loss(
        self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if return_outputs or not self.model.training or not takes_plain_loss(self):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # trl's compute_loss for this case, line for line, without the reads.
        inputs["use_cache"] = False
        facts = self._batch_facts
        right_padded = self.attends_right_padding_causally and facts is not None and facts.right_padded
        with (
            every_position_scored() if self.scores_every_position else nullcontext(),
            causal_attention_for_right_padding(right_padded),
        ):
            outputs = model(**inputs, fused_lm_head=True)
        num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -outputs.log_probs.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        with torch.no_grad():
            # entropy and is_top1 are zero on ignored positions: a step with no valid
            # position gives 0 / 1 = 0, as trl's `if num_valid > 0 else 0.0` does.
            valid = outputs.label_mask.sum().clamp(min=1)
            metrics = self._metrics["train"]
            metrics["entropy"].append(outputs.entropy.detach().sum() / valid)
            metrics["mean_token_accuracy"].append(outputs.is_top1.sum() / valid)
            if "attention_mask" in inputs:
                tokens = inputs["attention_mask"].sum()
            else:
                position_ids = inputs["position_ids"]
                tokens = torch.tensor(position_ids.size(1), device=position_ids.device)
            tokens = tokens // self._tp_size
            self._unread_tokens = tokens if self._unread_tokens is None else self._unread_tokens + tokens
        return loss

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        """The step's loss, with transformers' logging_nan_inf_filter applied on the device."""
        collated = self._facts_collator
        self._batch_facts = collated.take(inputs) if collated is not None else None
        loss = super().training_step(model, inputs, num_items_in_batch)
        running = getattr(self, "_tr_loss", None)
        if self.args.logging_nan_inf_filter or not isinstance(running, torch.Tensor):
            return loss  # transformers filters (reading the loss), or there is no loop to filter for
        # transformers: "if loss is nan or inf simply add the average of previous logged losses"
        average = running / (1 + self.state.global_step - self._globalstep_last_logged)
        return torch.where(torch.isfinite(loss), loss, average)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Read what the steps left on the GPU, then log as trl does."""
        if self._unread_tokens is not None:
            self._total_train_tokens += int(self._unread_tokens)
            self._unread_tokens = None
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        for values in self._metrics.values():
            for key, series in values.items():
                values[key] = [float(v) if isinstance(v, torch.Tensor) else v for v in series]
        super().log(logs, start_time)

    def get_train_dataloader(self) -> Any:
        """The training batches, noted on the host as the collator makes them."""
        main_input_name = getattr(self.model, "main_input_name", "input_ids")
        pad_token_id = getattr(self.processing_class, "pad_token_id", None)
        mode = self.args.include_num_input_tokens_seen
        collator: Any = self.data_collator  # type: ignore[has-type]
        noting = BatchFactsCollator(
            collator,
            lambda batch: count_input_tokens(batch, mode, main_input_name, pad_token_id),
            main_input_name,
        )
        self.data_collator = noting
        try:
            loader = super().get_train_dataloader()
        finally:
            self.data_collator = collator
        # Collated in worker processes, the facts never reach this one: transformers
        # counts, and every batch keeps its mask.
        self._facts_collator = noting if self.args.dataloader_num_workers == 0 else None
        return loader

    def _track_num_input_tokens(self, inputs: Any) -> None:
        facts = self._batch_facts  # this batch's: training_step took them
        tokens = None
        if facts is not None and self.args.include_num_input_tokens_seen != "no":
            tokens = facts.tokens
        if tokens is None:
            return super()._track_num_input_tokens(inputs)
        self.state.num_input_tokens_seen += tokens


def keep_metrics_on_device(trainer: Any) -> Any:
    """Give `trainer` (trl's SFTTrainer) the overrides above, in place (before train()). Returns it."""
    if not isinstance(trainer, UnreadMetrics):
        trainer.__class__ = cached_subclass(type(trainer), "UnreadMetrics", mixin=UnreadMetrics)
    return trainer
