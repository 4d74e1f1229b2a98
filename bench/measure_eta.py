"""The dashboard's ETA after 20 steps against the real end of an epoch.

Trains one epoch of the WORKLOAD.md data (1000 samples with its lognormal lengths,
rendered as text for the whitespace tokenizer of measure_memory.py's model) through
the worker's own trainer with the classic recipe, timestamps every logged step, and
asks app.services.runs.progress() what it would have shown at step 20: the worker's
estimate (worker/training/eta.py), and for comparison the older steps-only one. The
real time left runs to the log of the last step (training's end, before saving).

    python bench/measure_eta.py --model-dir /dev/shm/llama7b --build --out eta.json
    python bench/measure_eta.py --tiny
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure_memory import build, save_whitespace_tokenizer  # noqa: E402
from run_bench import sample_lengths  # noqa: E402

from app.models import Run, utcnow  # noqa: E402
from app.services.runs import progress  # noqa: E402
from worker.training.reporting import MemoryReporter, MetricValues  # noqa: E402

ETA_AT_STEP = 20


class TimedReporter(MemoryReporter):
    def __init__(self) -> None:
        super().__init__()
        self.logged_at: dict[int, datetime] = {}
        self.eta_at: dict[int, float | None] = {}

    def metrics(self, values: MetricValues) -> None:
        super().metrics(values)
        if values.loss is not None:
            self.logged_at[values.step] = utcnow()
            self.eta_at[values.step] = values.eta_seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    import torch
    from transformers import AutoConfig

    from core.run_config import RunConfig
    from worker.training.reporting import DataSources
    from worker.training.trainer import run_training

    model_dir = Path(args.model_dir or tempfile.mkdtemp(prefix="loraboard-eta-"))
    if args.build or args.tiny:
        build(model_dir, args.tiny, "7b")
    else:  # a model dir made by run_bench has a tokenizer for pre-tokenized data: not this text
        save_whitespace_tokenizer(model_dir)
    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    lengths = sample_lengths(200 if args.tiny else 1000, 64 if args.tiny else 1024)
    rng = random.Random(1)
    data = model_dir / "workload-text.jsonl"
    with data.open("w") as out:
        for length in lengths:
            out.write(
                json.dumps({"text": " ".join(f"t{rng.randrange(3, vocab)}" for _ in range(length))}) + "\n"
            )

    config = RunConfig(
        model_name=str(model_dir),
        dataset=str(data),
        max_seq_length=64 if args.tiny else 1024,
        logging_steps=5,
        device_map={"": 0} if torch.cuda.is_available() else "auto",
    )
    reporter = TimedReporter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # not the fp16 model that --build made in this process
    with tempfile.TemporaryDirectory() as scratch:
        started = utcnow()
        clock = time.perf_counter()
        run_training(config, Path(scratch), reporter, DataSources(train=str(data)), Path(scratch) / "models")
        finished = utcnow()
        wall = time.perf_counter() - clock
    total = reporter.derived_values["total_steps"]
    first_step = min(reporter.logged_at)
    at_step = reporter.logged_at[ETA_AT_STEP]
    # What the dashboard shows at the log of step 20: the worker's estimate, stored on the run.
    shown = Run(
        config={},
        status="running",
        total_steps=total,
        current_step=ETA_AT_STEP,
        started_at=started,
        first_logged_step=first_step,
        first_logged_at=reporter.logged_at[first_step],
        last_logged_at=at_step,
        eta_seconds=reporter.eta_at[ETA_AT_STEP],
        eta_at=at_step,
    )
    eta = progress(shown, now=at_step)["eta_seconds"]
    # The previous estimator (time per step between logs), on the same run, for comparison.
    shown.eta_seconds = shown.eta_at = None
    eta_steps_only = progress(shown, now=at_step)["eta_seconds"]
    # the last step's log (logging_steps divides the 250 steps): the end of training
    training_end = reporter.logged_at[max(reporter.logged_at)]
    actual_remaining = (training_end - at_step).total_seconds()
    result = {
        "card": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "total_steps": total,
        "last_logged_step": max(reporter.logged_at),
        "eta_at_step": ETA_AT_STEP,
        "eta_seconds": round(eta, 1),
        "actual_remaining_seconds": round(actual_remaining, 1),
        "error": round((eta - actual_remaining) / actual_remaining, 4),
        "eta_steps_only_seconds": round(eta_steps_only, 1),
        "error_steps_only": round((eta_steps_only - actual_remaining) / actual_remaining, 4),
        "acceleration": reporter.runtime_values.get("acceleration"),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)
        if torch.cuda.is_available()
        else None,
        "run_wall_seconds_incl_load": round(wall, 1),
        "first_to_last_log_seconds": round(
            (reporter.logged_at[max(reporter.logged_at)] - reporter.logged_at[first_step]).total_seconds(), 1
        ),
        # Every log's time since the first one, to try other ETA estimators on the same run.
        "log_seconds": {
            step: round((moment - reporter.logged_at[first_step]).total_seconds(), 3)
            for step, moment in sorted(reporter.logged_at.items())
        },
        "finished_seconds": round((finished - reporter.logged_at[first_step]).total_seconds(), 3),
        "eta_seconds_at_each_log": reporter.eta_at,
    }
    print(json.dumps(result), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
