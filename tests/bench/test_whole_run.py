"""bench/whole_run.py: the recipe it submits, the row it writes, and the whole path end to end
on the CPU (a tiny Llama through the real server and Celery worker, both trainers, cold then warm)."""

from __future__ import annotations

import json
import math

import pytest

from bench import whole_run
from bench.workload import TINY_MAX_LEN, recipe

ROW_FIELDS = {
    "date",
    "card",
    "versions",
    "variant",
    "cache",
    "tokens_per_s",
    "peak_allocated_gib",
    "first_step_s",
    "submit_to_adapter_s",
}


def test_the_submitted_recipe_is_the_workloads_run_config() -> None:
    from app.services.job_requests import JobCreate, run_config_from_request

    hyperparameters = recipe("reference", -1, 1024)
    request = JobCreate(
        model="/models/llama-2-7b-shape",
        training_file="/data/workload.jsonl",
        seed=42,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    )
    config = run_config_from_request(request)
    assert config.trainer == "reference"
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (64, 16, 0.1)
    assert config.target_modules == ["q_proj", "v_proj"]
    assert config.bnb_4bit_quant_type == "nf4" and not config.use_nested_quant
    assert config.bnb_4bit_compute_dtype == "float16" and not config.fp16 and not config.bf16
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (4, 1)
    assert config.gradient_checkpointing and config.group_by_length and not config.packing
    assert (config.max_grad_norm, config.learning_rate, config.weight_decay) == (0.3, 2e-4, 0.001)
    assert (config.optim, config.lr_scheduler_type, config.warmup_ratio) == (
        "paged_adamw_32bit",
        "cosine",
        0.03,
    )
    assert (config.max_seq_length, config.num_train_epochs, config.max_steps) == (1024, 1, -1)
    # no checkpoint on the way (the API's default would save one at the epoch's end)
    assert config.save_steps == 0 and not config.save_every_epoch
    assert config.dataset_format == "text"


def fake_job(timings: dict | None) -> dict:
    runtime = {
        "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"},
        "versions": {"torch": "2.11.0", "transformers": "5.17.0", "peft": "0.21.0", "trl": "1.16.0"},
        "acceleration": ["bf16"],
    }
    if timings is not None:
        runtime["timings"] = timings
    return {"id": "ftjob-1", "trained_tokens": 387272, "loraboard": {"runtime": runtime, "total_steps": 250}}


def test_a_row_holds_what_the_worker_measured_and_the_wall_time() -> None:
    timings = {
        "model_load_s": 20.5,
        "first_step_s": 41.25,
        "train_s": 100.0,
        "save_s": 0.5,
        "steady_tokens_per_s": 3401.23456,
        "peak_allocated_gib": 5.8731,
    }
    workload = whole_run.Workload(
        whole_run.PROJECT_ROOT, whole_run.PROJECT_ROOT, 1000, 387272, "llama-2-7b-shape"
    )
    row = whole_run.make_row(
        fake_job(timings),
        variant="loraboard",
        cache="warm",
        submit_to_adapter_s=130.123,
        workload=workload,
        max_steps=-1,
    )
    assert set(row) >= ROW_FIELDS
    assert row["card"] == "NVIDIA H100 80GB HBM3"
    assert (row["variant"], row["cache"]) == ("loraboard", "warm")
    assert row["tokens_per_s"] == 3401.235 and row["peak_allocated_gib"] == 5.873
    assert row["first_step_s"] == 41.25 and row["submit_to_adapter_s"] == 130.12
    assert row["versions"]["torch"] == "2.11.0" and set(row["versions"]) == set(whole_run.VERSIONED)
    assert row["steps"] == 250 and row["samples"] == 1000 and row["dataset_tokens"] == 387272
    json.dumps(row)  # one JSON line


def test_a_run_without_the_workers_timings_is_an_error_not_a_row() -> None:
    workload = whole_run.Workload(whole_run.PROJECT_ROOT, whole_run.PROJECT_ROOT, 1, 1, "tiny-llama")
    with pytest.raises(RuntimeError, match="recorded no timings"):
        whole_run.make_row(
            fake_job(None),
            variant="reference",
            cache="cold",
            submit_to_adapter_s=1.0,
            workload=workload,
            max_steps=2,
        )


def test_phases_and_steps_are_checked_before_anything_starts(tmp_path) -> None:
    with pytest.raises(SystemExit, match="unknown phases"):
        whole_run.main(["--phases", "reference-hot", "--out", str(tmp_path / "r.jsonl")])
    with pytest.raises(SystemExit, match="name both"):
        whole_run.main(["--phases", "loraboard-warm", "--out", str(tmp_path / "r.jsonl")])
    with pytest.raises(SystemExit, match="--steps"):
        whole_run.main(["--steps", "0", "--out", str(tmp_path / "r.jsonl")])


@pytest.mark.slow
def test_the_whole_path_on_the_cpu_appends_a_row_per_phase(tmp_path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text('{"earlier": "row"}\n')  # appended to, never rewritten
    work = tmp_path / "work"
    logs = tmp_path / "logs"
    argv = ["--tiny", "--steps", "2", "--out", str(out), "--work-dir", str(work), "--logs", str(logs)]
    assert whole_run.main(argv) == 0

    earlier, *rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert earlier == {"earlier": "row"}
    assert [(row["variant"], row["cache"]) for row in rows] == [
        ("reference", "cold"),
        ("loraboard", "cold"),
        ("loraboard", "warm"),
    ]
    for row in rows:
        assert set(row) >= ROW_FIELDS, ROW_FIELDS - set(row)
        assert row["card"] == "cpu" and row["versions"]["torch"]
        for name in ("tokens_per_s", "first_step_s", "submit_to_adapter_s"):
            assert isinstance(row[name], int | float) and math.isfinite(row[name]) and row[name] > 0, name
        # no GPU memory on the CPU: zero or absent, never a made-up figure
        assert row["peak_allocated_gib"] in (0, 0.0, None)
        assert row["submit_to_adapter_s"] >= row["first_step_s"]
        assert row["steps"] == 2 and row["samples"] == 1000 and row["model"] == "tiny-llama"
        adapter = work / f"data-{row['variant']}" / "artifacts" / row["job"] / "adapter"
        assert (adapter / "adapter_model.safetensors").stat().st_size > 0
        assert json.loads((adapter / "run_config.json").read_text())["max_seq_length"] == TINY_MAX_LEN
    # warm: the same data dir (its compile caches) and a second job there
    cold, warm = rows[1], rows[2]
    assert cold["job"] != warm["job"]
    assert (work / "data-loraboard" / "artifacts" / warm["job"]).is_dir()
    assert sorted(path.name for path in logs.iterdir()) == [
        "data-loraboard-server.log",
        "data-loraboard-worker.log",
        "data-reference-server.log",
        "data-reference-worker.log",
    ]
    assert "succeeded" in (logs / "data-loraboard-worker.log").read_text()


def test_a_failed_phase_is_reported_and_the_next_ones_still_run(tmp_path, monkeypatch) -> None:
    """One GPU call must bring back what it can: a failed reference costs no Loraboard row."""
    events: list[str] = []

    class FakeStack:
        def __init__(self, name: str) -> None:
            self.name = name

        def restart_worker(self) -> None:
            events.append(f"restart {self.name}")

        def stop(self) -> None:
            events.append(f"stop {self.name}")

    def run_phase(stack, workload, variant, cache, args):
        if variant == "reference":
            raise RuntimeError("out of memory")
        return {"variant": variant, "cache": cache}

    workload = whole_run.Workload(tmp_path, tmp_path, 1, 1, "tiny-llama")
    monkeypatch.setattr(whole_run, "prepare_workload", lambda *args: workload)
    monkeypatch.setattr(whole_run, "fresh_stack", lambda work_dir, name, workload: FakeStack(name))
    monkeypatch.setattr(whole_run, "run_phase", run_phase)
    args = whole_run.argparse.Namespace(tiny=True, model_dir=None, phases=set(whole_run.PHASES), logs=None)
    rows, failed = whole_run.run_phases(args, tmp_path)
    assert failed == ["reference-cold"]
    assert rows == [{"variant": "loraboard", "cache": "cold"}, {"variant": "loraboard", "cache": "warm"}]
    # each stack stopped once, the loraboard one only after its warm run
    assert events == ["stop data-reference", "restart data-loraboard", "stop data-loraboard"]
