"""The Trainer -> Reporter bridge: metrics, checkpoints and cancellation.

Tokens are counted by the Trainer itself (include_num_input_tokens_seen="non_padding":
the attention-mask sum of every batch, kept in the trainer state, so the count
survives a resume). Tokens per second are real (non-pad) tokens over the wall time
spent training since the last log: the clock restarts after an evaluation or a
checkpoint so that neither is counted as training time.

Every step's wall time and real tokens are kept too, for the ETA reported with each
log (worker/training/eta.py): the tokens still to train are known from the data.
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from worker.training.eta import StepTime, remaining_seconds
from worker.training.reporting import MetricValues, Reporter, TrainingDiverged, first_non_finite
from worker.training.run_timings import RunTimings

# The ETA fits the latest steps only: the current pace, and a fit that costs the same at
# step 20 and at step 20,000 (it runs at every log). 500 steps span ten of group_by_length's
# megabatches of 50 batches, long to short.
ETA_WINDOW_STEPS = 500


class ReporterCallback(TrainerCallback):
    def __init__(
        self,
        reporter: Reporter,
        metrics_path: Path,
        timings: RunTimings | None = None,
        *,
        compiling: bool = False,
    ):
        self.reporter = reporter
        self.timings = timings
        self._compiling = compiling  # step 1 includes torch.compile's tracing and code generation
        self._first_step_seen = False
        self.metrics_path = (
            metrics_path  # every row, appended as it comes (copied into the adapter at the end)
        )
        self.latest: dict[str, Any] = {}
        self.stopped_by_request = False
        self._clock = time.perf_counter()
        self._tokens_at_clock = 0
        self._known_checkpoints: set[Path] = set()
        self._step_times: deque[StepTime] = deque(maxlen=ETA_WINDOW_STEPS)
        self._step_clock = time.perf_counter()
        self._tokens_at_step = 0
        self._planned_tokens: int | None = None
        # A checkpoint's metrics under OpenAI's names (FineTuningJobCheckpoint.metrics).
        self._openai_metrics: dict[str, float] = {}

    # --- training starts (fresh or resumed) -----------------------------------
    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self._restart_clock(state)
        self._known_checkpoints = set(Path(args.output_dir).glob("checkpoint-*"))
        self._drop_rows_after(state.global_step)
        self._step_times.clear()  # this attempt's pace only: a resumed run may run on another GPU
        self._planned_tokens = _planned_tokens(train_dataloader, state.max_steps, args)
        # The data loaded and the model built: the job leaves validating_files (when the reporter tracks it).
        training_started = getattr(self.reporter, "training_started", None)
        if training_started is not None:
            training_started()

    # --- metrics ---------------------------------------------------------------
    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return  # evaluation logs are reported by on_evaluate; the final summary is not a step
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen
        elapsed = now - self._clock
        values = MetricValues(
            step=state.global_step,
            epoch=_round(state.epoch),
            loss=logs.get("loss"),
            learning_rate=logs.get("learning_rate"),
            grad_norm=logs.get("grad_norm"),
            mean_token_accuracy=logs.get("mean_token_accuracy"),
            tokens_per_second=(tokens - self._tokens_at_clock) / elapsed if elapsed > 0 and tokens else None,
            tokens_seen=tokens or None,
            eta_seconds=self._eta_seconds(state),
            **_gpu_memory_mb(),
        )
        self._report(values)
        self._remember_openai_metrics(logs, "train_")
        self._clock, self._tokens_at_clock = now, tokens

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._remember_openai_metrics(
            {key.removeprefix("eval_"): value for key, value in (metrics or {}).items()}, "valid_"
        )
        if metrics and "eval_loss" in metrics:
            self._report(
                MetricValues(
                    step=state.global_step,
                    epoch=_round(state.epoch),
                    eval_loss=metrics["eval_loss"],
                    eval_mean_token_accuracy=metrics.get("eval_mean_token_accuracy"),
                )
            )
        self._restart_clock(state)

    # --- checkpoints -----------------------------------------------------------
    def on_save(self, args, state, control, **kwargs):
        # Called after the Trainer wrote checkpoint-N and applied save_total_limit.
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if path.is_dir():
            self.reporter.checkpoint(state.global_step, path, {**self.latest, **self._openai_metrics})
            self._known_checkpoints.add(path)
        self._report_removed()
        self._restart_clock(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._report_removed()

    # --- steps: timing and cancellation -----------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        if not self._first_step_seen:
            # Step 1 carries the compile and the allocator's warm-up: not the pace of the others.
            self._first_step_seen = True
            self._first_step_done()
            now = time.perf_counter()
        else:
            self._step_times.append(StepTime(now - self._step_clock, tokens - self._tokens_at_step))
            if self.timings is not None:
                self.timings.step(now - self._step_clock, tokens - self._tokens_at_step)
        self._step_clock, self._tokens_at_step = now, tokens
        if self.reporter.should_stop():
            self.stopped_by_request = True
            control.should_training_stop = True  # the Trainer stops before the next step
            # A pause (the worker's reporter says so) keeps this step in a checkpoint to resume from;
            # a cancel keeps only what was already saved.
            save_before_stop = getattr(self.reporter, "save_before_stop", None)
            if save_before_stop is not None and save_before_stop():
                control.should_save = True

    # --- helpers -------------------------------------------------------------------
    def _first_step_done(self) -> None:
        if self.timings is None:
            return
        import torch

        if torch.cuda.is_available():
            # Steps are queued without waiting for the GPU: wait once, so that "the first step
            # took" means the GPU finished it. The clock restarts after, for the steady pace.
            torch.cuda.synchronize()
        self.timings.first_step_done(self._compiling)

    def _remember_openai_metrics(self, logs: dict[str, Any], prefix: str) -> None:
        """loss and trl's mean_token_accuracy, as train_*/valid_* (the latest of each)."""
        for name in ("loss", "mean_token_accuracy"):
            if isinstance(logs.get(name), int | float):
                self._openai_metrics[prefix + name] = float(logs[name])

    def _report(self, values: MetricValues) -> None:
        # transformers' NaN filter hides a non-finite step in the mean; a whole log that is NaN
        # (or a NaN gradient norm) means the run diverged: it fails, it must not "succeed".
        if (bad := first_non_finite(values)) is not None:
            raise TrainingDiverged(values.step, *bad)
        self.latest.update(values.as_dict())
        self.reporter.metrics(values)
        with self.metrics_path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(values.as_dict()) + "\n")

    def _report_removed(self) -> None:
        for path in sorted(self._known_checkpoints):
            if not path.exists():
                self._known_checkpoints.discard(path)
                self.reporter.checkpoint_removed(path)

    def _restart_clock(self, state) -> None:
        self._clock, self._tokens_at_clock = time.perf_counter(), state.num_input_tokens_seen
        self._step_clock, self._tokens_at_step = self._clock, self._tokens_at_clock

    def _eta_seconds(self, state) -> float | None:
        if not state.max_steps:
            return None
        tokens_left = None
        if self._planned_tokens is not None and state.num_input_tokens_seen:
            tokens_left = self._planned_tokens - state.num_input_tokens_seen
        return remaining_seconds(self._step_times, state.max_steps - state.global_step, tokens_left)

    def _drop_rows_after(self, step: int) -> None:
        """On resume, rows logged after the checkpoint's step are logged again: keep one copy."""
        if not self.metrics_path.exists():
            return
        rows = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        kept = [row for row in rows if row["step"] <= step]
        self.metrics_path.write_text("".join(json.dumps(row) + "\n" for row in kept))


def _planned_tokens(train_dataloader: Any, max_steps: int, args: Any) -> int | None:
    """Real tokens the whole run trains: the tokenized samples' lengths, scaled to max_steps.

    None where they are unknown (packing or a streaming dataset): the ETA then uses steps alone.
    """
    dataset = getattr(train_dataloader, "dataset", None)
    if dataset is None or getattr(args, "packing", False) or max_steps <= 0:
        return None
    try:
        epoch_tokens = sum(len(ids) for ids in dataset["input_ids"])
        steps_per_epoch = len(train_dataloader) // max(args.gradient_accumulation_steps, 1)
    except (KeyError, TypeError):
        return None
    if not epoch_tokens or not steps_per_epoch:
        return None
    return round(epoch_tokens * max_steps / steps_per_epoch)


def _round(epoch: float | None) -> float | None:
    return round(epoch, 4) if epoch is not None else None


def _gpu_memory_mb() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {
        "gpu_memory_allocated_mb": torch.cuda.memory_allocated() / 2**20,
        "gpu_memory_reserved_mb": torch.cuda.memory_reserved() / 2**20,
    }
