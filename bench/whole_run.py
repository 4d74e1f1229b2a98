"""The whole fine-tune as a user gets it: submit to adapter saved, through the real path.

On the machine it runs on: builds the workload's model once (bench/workload.py, in a
child process that keeps no GPU memory) and its 1,000 samples as a "text" JSONL file,
then for each phase starts Loraboard's own server and training worker on a fresh SQLite
data dir (bench/local_stack.py), submits the recipe of docs/workload.md through the REST
API (POST /v1/fine_tuning/jobs, `trainer` as a hyperparameter), polls every 0.2 s until
the adapter is on disk and the run succeeded, and reads what the worker itself measured
(runtime["timings"], worker/recorder.py) from the job. One row per phase is appended to
the results table (bench/results/results.jsonl by default).

Phases, in this order (--phases chooses among them):
  reference-cold  trainer "reference": fresh data dir, empty compile caches, fresh worker
  loraboard-cold  trainer "loraboard": likewise, in a data dir of its own
  loraboard-warm  trainer "loraboard" again in the cold phase's data dir: its compile
                  caches kept, the worker restarted, the same model shape trained again

    python -m bench whole-run --out $OUT/results.jsonl --logs $OUT # on the GPU machine
    python -m bench whole-run --steps 20 --out /tmp/smoke.jsonl    # a short smoke
    python -m bench whole-run --tiny --steps 2 --out /tmp/r.jsonl  # CPU: the plumbing only
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.local_stack import PROJECT_ROOT, LocalStack
from bench.workload import (
    MAX_LEN,
    TINY_MAX_LEN,
    TINY_VOCAB,
    VOCAB,
    recipe,
    sample_lengths,
    write_text_dataset,
)

DEFAULT_OUT = PROJECT_ROOT / "bench" / "results" / "results.jsonl"
POLL_S = 0.2
STATUS_EVERY_S = 1.0
FINAL = {"succeeded", "failed", "cancelled"}
PHASES = ("reference-cold", "loraboard-cold", "loraboard-warm")
# The adapter is complete once run_config.json is written: the trainer writes it after the
# weights and the tokenizer (worker/training/trainer.py).
ADAPTER_FILES = ("adapter_model.safetensors", "run_config.json")
VERSIONED = ("torch", "transformers", "peft", "trl", "bitsandbytes", "triton")
# What the worker records (runtime["timings"], worker/training/run_timings.py) -> the row's names.
TIMINGS = {
    "steady_tokens_per_s": "tokens_per_s",
    "peak_allocated_gib": "peak_allocated_gib",
    "first_step_s": "first_step_s",
    "model_load_s": "model_load_s",
    "train_s": "train_s",
    "save_s": "save_s",
}


@dataclass
class Workload:
    model_dir: Path
    dataset: Path
    samples: int
    tokens: int
    model: str


def prepare_workload(work_dir: Path, tiny: bool, model_dir: Path | None) -> Workload:
    """The model (built unless given) and the dataset, under work_dir."""
    if model_dir is None:
        model_dir = work_dir / "model"
        started = time.perf_counter()
        command = [sys.executable, "-m", "bench.workload", str(model_dir), *(["--tiny"] if tiny else [])]
        subprocess.run(command, check=True, cwd=PROJECT_ROOT)
        say(f"model built in {time.perf_counter() - started:.1f} s: {model_dir}")
    lengths = sample_lengths(max_len=TINY_MAX_LEN if tiny else MAX_LEN)
    dataset = work_dir / "data" / "workload.jsonl"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    tokens = write_text_dataset(dataset, lengths, TINY_VOCAB if tiny else VOCAB)
    return Workload(model_dir, dataset, len(lengths), tokens, "tiny-llama" if tiny else "llama-2-7b-shape")


def submit(stack: LocalStack, workload: Workload, hyperparameters: dict[str, Any]) -> tuple[str, float]:
    """POST the job; returns its id and the perf_counter just before the request."""
    body = {
        "model": str(workload.model_dir),
        "training_file": str(workload.dataset),
        "seed": 42,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    }
    started = time.perf_counter()
    response = httpx.post(
        f"{stack.base_url}/v1/fine_tuning/jobs", json=body, headers=stack.headers, timeout=60
    )
    if response.status_code != 200:
        raise RuntimeError(f"submission refused ({response.status_code}): {response.text}")
    return response.json()["id"], started


def wait_for_adapter(
    stack: LocalStack, job_id: str, submitted: float, timeout_s: float
) -> tuple[float, dict]:
    """Poll the disk every POLL_S for the adapter and the API every second for the status;
    returns the seconds from submission to the adapter on disk, and the final job."""
    adapter = stack.data_dir / "artifacts" / job_id / "adapter"
    adapter_s: float | None = None
    next_status = 0.0
    deadline = submitted + timeout_s
    with httpx.Client(base_url=stack.base_url, headers=stack.headers, timeout=30) as client:
        while True:
            now = time.perf_counter()
            if adapter_s is None and all((adapter / name).is_file() for name in ADAPTER_FILES):
                adapter_s = now - submitted
            if now >= next_status or adapter_s is not None:
                job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
                status = job["loraboard"]["status"]
                if status in FINAL:
                    break
                next_status = now + STATUS_EVERY_S
            if now > deadline:
                raise TimeoutError(f"{job_id} not done after {timeout_s:.0f} s:\n{stack.log_tail('worker')}")
            time.sleep(POLL_S)
    if status != "succeeded" or adapter_s is None:
        raise RuntimeError(f"{job_id} ended {status}: {job.get('error')}\n{stack.log_tail('worker')}")
    return adapter_s, job


def make_row(
    job: dict, *, variant: str, cache: str, submit_to_adapter_s: float, workload: Workload, max_steps: int
) -> dict[str, Any]:
    """One line of the results table, from the finished job (what the worker recorded)."""
    runtime = job["loraboard"]["runtime"]
    timings = runtime.get("timings")
    if not timings:
        raise RuntimeError(f"{job['id']}: the worker recorded no timings (runtime keys: {sorted(runtime)})")
    device = runtime.get("device", {})
    row: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "card": device.get("name", "unknown"),
        "versions": versions(runtime),
        "variant": variant,
        "cache": cache,
        **{name: _rounded(timings.get(key)) for key, name in TIMINGS.items()},
        "submit_to_adapter_s": round(submit_to_adapter_s, 2),
        # the run's planned steps (a succeeded run trained them all; its current_step moves
        # only at logging steps)
        "steps": job["loraboard"]["total_steps"],
        "max_steps": max_steps,
        "model": workload.model,
        "samples": workload.samples,
        "dataset_tokens": workload.tokens,
        "trained_tokens": job.get("trained_tokens"),
        "acceleration": runtime.get("acceleration", []),
        "worker_timings": timings,  # every phase the worker timed (worker/training/run_timings.py)
        "job": job["id"],
        "git_commit": git_commit(),
        "host": platform.node(),
    }
    return row


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, int | float) and math.isfinite(value) else value


def versions(runtime: dict) -> dict[str, str | None]:
    """The worker's own record of its libraries, and triton's (the same environment)."""
    recorded = runtime.get("versions", {})
    found: dict[str, str | None] = {}
    for name in VERSIONED:
        value = recorded.get(name)
        if value is None:
            try:
                value = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                value = None
        found[name] = value
    return found


def git_commit() -> str | None:
    """The commit measured: BENCH_GIT_COMMIT where the caller knows it better than the tree
    (the lent GPU machine's copy carries a stale .git), else the checkout's HEAD."""
    if os.environ.get("BENCH_GIT_COMMIT"):
        return os.environ["BENCH_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def append_row(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(row) + "\n")


def say(message: str) -> None:
    print(f"# whole-run: {message}", file=sys.stderr, flush=True)


def run_phase(
    stack: LocalStack, workload: Workload, variant: str, cache: str, args: argparse.Namespace
) -> dict[str, Any]:
    stack.wait_for_worker()
    hyperparameters = recipe(variant, args.steps, TINY_MAX_LEN if args.tiny else MAX_LEN)
    job_id, submitted = submit(stack, workload, hyperparameters)
    say(f"{variant} {cache}: submitted {job_id}")
    adapter_s, job = wait_for_adapter(stack, job_id, submitted, args.run_timeout)
    row = make_row(
        job,
        variant=variant,
        cache=cache,
        submit_to_adapter_s=adapter_s,
        workload=workload,
        max_steps=args.steps,
    )
    append_row(args.out, row)
    say(
        f"{variant} {cache}: adapter after {adapter_s:.1f} s; first step {row['first_step_s']} s, "
        f"{row['tokens_per_s']} tokens/s, peak {row['peak_allocated_gib']} GiB"
    )
    print(json.dumps(row), flush=True)
    return row


def fresh_stack(work_dir: Path, name: str, workload: Workload) -> LocalStack:
    """A new data dir, and so an empty compile cache (the worker keeps it in the data dir)."""
    data_dir = work_dir / name
    shutil.rmtree(data_dir, ignore_errors=True)
    roots = [workload.model_dir.resolve(), workload.dataset.parent.resolve()]
    stack = LocalStack(data_dir=data_dir, compile_cache_dir=data_dir / "cache" / "compile", local_roots=roots)
    stack.start()
    return stack


def run_phases(args: argparse.Namespace, work_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every chosen phase in order; returns the rows and the phases that failed (a failed
    phase is reported and the next one runs: one call should bring back what it can)."""
    workload = prepare_workload(work_dir, args.tiny, args.model_dir)
    say(f"dataset: {workload.samples} samples, {workload.tokens} tokens: {workload.dataset}")
    phases = [phase for phase in PHASES if phase in args.phases]
    rows, failed = [], []
    stacks: dict[str, LocalStack] = {}
    try:
        for phase in phases:
            variant, cache = phase.split("-")
            started = time.perf_counter()
            try:
                if cache == "cold":
                    stacks[variant] = fresh_stack(work_dir, f"data-{variant}", workload)
                elif variant in stacks:
                    stacks[variant].restart_worker()  # the caches stay in its data dir
                else:
                    raise RuntimeError(f"{variant}-cold has no stack to warm up")
                rows.append(run_phase(stacks[variant], workload, variant, cache, args))
                say(f"{phase} took {time.perf_counter() - started:.1f} s with the stack's start")
            except Exception as error:
                failed.append(phase)
                say(f"{phase} FAILED after {time.perf_counter() - started:.1f} s: {error}")
            if variant in stacks and (cache == "warm" or f"{variant}-warm" not in phases):
                stacks.pop(variant).stop()
    finally:
        for stack in stacks.values():
            stack.stop()
        if args.logs is not None:
            copy_logs(work_dir, args.logs)
    return rows, failed


def copy_logs(work_dir: Path, destination: Path) -> None:
    """Each data dir's server and worker logs, as <data dir>-<process>.log (flat: the device
    returns files at most two folders down)."""
    destination.mkdir(parents=True, exist_ok=True)
    for log in sorted(work_dir.glob("data-*/logs/*.log")):
        shutil.copyfile(log, destination / f"{log.parent.parent.name}-{log.name}")


SHM_NEEDED_BYTES = 40 << 30  # the 13.5 GB model, with room for the data dirs and caches


def scratch_base(tiny: bool) -> str | None:
    """/dev/shm on the GPU machine, where it holds the model in memory (as a user's page cache
    would after a first load); the default temporary folder when it is small or for --tiny."""
    shm = Path("/dev/shm")
    if tiny or not shm.is_dir() or shutil.disk_usage(shm).free < SHM_NEEDED_BYTES:
        return None
    return str(shm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench whole-run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results table to append to (JSONL)")
    parser.add_argument(
        "--steps", type=int, default=-1, help="max_steps of each run; -1: one epoch (250 steps)"
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny Llama on the CPU: checks the plumbing")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help="comma-separated, among " + ", ".join(PHASES)
    )
    parser.add_argument("--model-dir", type=Path, help="a model dir built before (bench/workload.py)")
    parser.add_argument("--work-dir", type=Path, help="where data dirs go (default: a temporary folder)")
    parser.add_argument("--logs", type=Path, help="copy the server's and the worker's logs here at the end")
    parser.add_argument("--run-timeout", type=float, default=900.0, help="seconds before a run is given up")
    args = parser.parse_args(argv)
    args.phases = set(filter(None, args.phases.split(",")))
    if unknown := args.phases - set(PHASES):
        raise SystemExit(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    if "loraboard-warm" in args.phases and "loraboard-cold" not in args.phases:
        raise SystemExit("loraboard-warm runs on the caches of loraboard-cold: name both")
    if args.steps == 0 or args.steps < -1:
        raise SystemExit("--steps: a positive number of steps, or -1 for one epoch")
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        _, failed = run_phases(args, args.work_dir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="bench-whole-run-", dir=scratch_base(args.tiny)) as work_dir:
            _, failed = run_phases(args, Path(work_dir))
    if failed:
        say(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
