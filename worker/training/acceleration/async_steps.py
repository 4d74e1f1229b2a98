"""The "async" feature: training steps that never wait for the GPU.

The host then queues the next step's kernels while the GPU still runs this one. The
classic recipe's step waits about 135 times; each wait is removed by one of this
package's modules, with the same arithmetic and the same logs:

- the host's check for padding before the SDPA mask (padding_mask.py, at prepare_model);
- trl's metrics and transformers' token count read with .item() every step, and trl's
  fused LM head selecting the labelled positions (unread_metrics.py: read at log steps);
- one synchronize after each of bitsandbytes' per-tensor optimizer updates
  (queued_optimizer.py, which also makes them one update);
- the batch's copy to the device and the loop's NaN/inf check of every loss (trainer
  arguments the planner sets: pinned memory, non-blocking copies, the filter on the GPU).
"""

from __future__ import annotations

from typing import Any


def train_without_waiting(trainer: Any, *, causal_right_padding: bool) -> None:
    """Patch a built trl SFTTrainer in place, before train(). causal_right_padding: the
    "flash" feature (padding_mask.py) reads this flag from the trainer at every batch."""
    from worker.training.acceleration.queued_optimizer import queue_trainer_optimizer_updates
    from worker.training.acceleration.unread_metrics import keep_metrics_on_device

    keep_metrics_on_device(trainer)
    trainer.attends_right_padding_causally = causal_right_padding
    queue_trainer_optimizer_updates(trainer)
