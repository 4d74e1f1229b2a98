"""run_training end to end on the demo model with real 4-bit bitsandbytes, into a MemoryReporter."""

from __future__ import annotations

import json

import pytest

from core.demo_dataset import demo_dataset_path
from core.formats import DatasetError
from core.run_config import DEMO_DATASET_ID, DEMO_MODEL_ID, preset_config
from core.schedule import lr_at
from tests.training_support import write_jsonl
from worker.training.reporting import DataSources, MemoryReporter

ADAPTER_FILES = {"adapter_model.safetensors", "adapter_config.json"}


def small(**overrides):
    """The demo preset, cut to a few steps."""
    return preset_config(
        "demo", **{"max_steps": 6, "per_device_train_batch_size": 8, "logging_steps": 2, **overrides}
    )


class StopAt(MemoryReporter):
    """Asks to stop once a step >= stop_step has been logged; optionally as a pause (save first)."""

    def __init__(self, stop_step: int, pause: bool = False):
        super().__init__()
        self.stop_step, self.pause = stop_step, pause

    def should_stop(self) -> bool:
        return any(row.step >= self.stop_step for row in self.metric_rows)

    def save_before_stop(self) -> bool:
        return self.pause


def train_rows(reporter):
    return [row for row in reporter.metric_rows if row.loss is not None]


def test_metrics_checkpoints_and_the_final_adapter(models_dir, tmp_path):
    from worker.training.inference import generate_chat
    from worker.training.trainer import run_training

    config = small(save_steps=2, save_total_limit=2)
    reporter = MemoryReporter()
    result = run_training(config, tmp_path, reporter, DataSources(train=DEMO_DATASET_ID), models_dir)

    assert (result.global_step, result.stopped_early) == (6, False)
    assert reporter.derived_values["total_steps"] == 6
    assert reporter.derived_values["num_samples"] == 480
    rows = train_rows(reporter)
    assert [row.step for row in rows] == [2, 4, 6]
    assert all(row.loss > 0 and row.grad_norm is not None and row.tokens_per_second > 0 for row in rows)
    assert [row.tokens_seen for row in rows] == sorted({row.tokens_seen for row in rows})
    assert result.trained_tokens == rows[-1].tokens_seen
    # the worker's ETA: time left from step times and the tokens still to train; none at the end
    assert rows[0].eta_seconds > 0 and rows[1].eta_seconds > 0 and rows[-1].eta_seconds == 0.0
    warmup = reporter.derived_values["warmup_steps"]
    for row in rows:
        assert row.learning_rate == pytest.approx(lr_at(row.step, config, 6, warmup))

    # save_steps=2 with save_total_limit=2: checkpoint-2 is written, then removed when 6 is saved.
    checkpoints = tmp_path / "checkpoints"
    assert [step for step, _, _ in reporter.checkpoints] == [2, 4, 6]
    assert reporter.removed == [checkpoints / "checkpoint-2"]
    assert sorted(path.name for path in checkpoints.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    for name in ("checkpoint-4", "checkpoint-6"):
        assert {path.name for path in (checkpoints / name).iterdir()} >= ADAPTER_FILES
    assert reporter.checkpoints[-1][2]["step"] == 6  # the latest metrics travel with the checkpoint

    adapter = result.adapter_dir
    names = {path.name for path in adapter.iterdir()}
    assert ADAPTER_FILES | {"run_config.json", "metrics.jsonl", "tokenizer.json"} <= names
    assert json.loads((adapter / "run_config.json").read_text())["max_steps"] == 6
    assert [json.loads(line)["step"] for line in (adapter / "metrics.jsonl").read_text().splitlines()] == [
        2,
        4,
        6,
    ]

    # What was really used on this CPU worker, and why.
    runtime = reporter.runtime_values
    assert runtime["device"]["type"] == "cpu"
    assert runtime["from_pretrained"]["device_map"] == {"": "cpu"}
    assert runtime["quantization"]["bnb_4bit_quant_type"] == "nf4"
    assert any("device_map" in message for _, message, _ in reporter.events)

    # Where the time went: each phase announced as it starts, then its seconds; step 1 timed.
    phases = [data["phase"] for _, _, data in reporter.events if data and "phase" in data]
    assert phases == ["model_files", "data", "model_load", "trainer", "train", "first_step", "save"]
    timings = runtime["timings"]
    before_step_one = sum(timings[f"{phase}_s"] for phase in ("model_files", "data", "model_load", "trainer"))
    assert 0 < before_step_one < timings["first_step_s"] < timings["total_s"]
    assert timings["train_s"] + timings["save_s"] < timings["total_s"]
    assert timings["steady_tokens_per_s"] > 0 and "peak_allocated_gib" not in timings  # no GPU here
    assert runtime["phase"] is None  # finished: no phase is "now"

    # A checkpoint is usable on its own, like the final adapter.
    reply = generate_chat(
        DEMO_MODEL_ID,
        str(checkpoints / "checkpoint-4"),
        [{"role": "user", "content": "What is the opposite of hot?"}],
        models_dir=models_dir,
        use_4bit=True,
        quantization={"bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_type": "nf4"},
        max_tokens=3,
        temperature=0,
    )
    assert reply["finish_reason"] in ("stop", "length") and reply["completion_tokens"] <= 3
    assert reply["prompt_tokens"] > 5


def test_cancel_stops_early_and_resume_continues_from_the_checkpoint(models_dir, tmp_path):
    from worker.training.trainer import run_training

    config = small(max_steps=8, save_steps=2)
    data = DataSources(train=DEMO_DATASET_ID)
    cancelled = StopAt(stop_step=4)
    result = run_training(config, tmp_path, cancelled, data, models_dir)
    # Step 4's row is logged after step 4 ends: the stop is seen at the end of step 5.
    assert result.stopped_early and result.global_step == 5
    assert not (tmp_path / "adapter").exists()
    assert [step for step, _, _ in cancelled.checkpoints] == [2, 4]

    resumed = MemoryReporter()
    result = run_training(config, tmp_path, resumed, data, models_dir, resume_from_checkpoint=True)
    assert (result.global_step, result.stopped_early) == (8, False)
    assert [row.step for row in train_rows(resumed)] == [6, 8]  # continues after step 4, not from 0
    assert any("checkpoint-4" in message for _, message, _ in resumed.events)
    steps = [
        json.loads(line)["step"] for line in (result.adapter_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [2, 4, 6, 8]


def test_a_pause_saves_a_checkpoint_even_without_save_steps(models_dir, tmp_path):
    from worker.training.trainer import run_training

    reporter = StopAt(stop_step=2, pause=True)
    result = run_training(small(), tmp_path, reporter, DataSources(train=DEMO_DATASET_ID), models_dir)
    assert result.stopped_early
    assert [step for step, _, _ in reporter.checkpoints] == [result.global_step]
    assert {path.name for path in reporter.checkpoints[0][1].iterdir()} >= ADAPTER_FILES


# After an evaluation, training must still backpropagate through the 4-bit base (see
# cpu_4bit_layout.keep_trainable_layout): torch's warning about it is an error here.
@pytest.mark.filterwarnings("error:.*autograd kernel was not registered")
def test_validation_split_reports_eval_loss(models_dir, tmp_path):
    from worker.training.trainer import run_training

    reporter = MemoryReporter()
    data = DataSources(train=DEMO_DATASET_ID, validation=str(demo_dataset_path("heldout")))
    run_training(small(max_steps=4, eval_steps=2), tmp_path, reporter, data, models_dir)
    evaluations = [row for row in reporter.metric_rows if row.eval_loss is not None]
    assert [row.step for row in evaluations] == [2, 4]
    assert all(row.eval_loss > 0 for row in evaluations)
    assert reporter.derived_values["eval_samples"] == 80
    # Metrics arrive in step order: the train row of a step, then its evaluation.
    assert [row.step for row in reporter.metric_rows] == [2, 2, 4, 4]


def test_eval_fraction_holds_out_part_of_the_training_data(models_dir, tmp_path):
    from worker.training.trainer import run_training

    reporter = MemoryReporter()
    run_training(
        small(max_steps=2, eval_fraction=0.1), tmp_path, reporter, DataSources(DEMO_DATASET_ID), models_dir
    )
    assert reporter.derived_values["eval_samples"] == 48
    assert reporter.derived_values["num_samples"] == 432
    assert any(row.eval_loss is not None for row in reporter.metric_rows)


def test_a_bad_dataset_fails_with_line_numbers(models_dir, tmp_path):
    from worker.training.trainer import run_training

    path = write_jsonl(
        tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": ""}]
    )
    with pytest.raises(DatasetError, match="line 2: field 'completion' is empty"):
        run_training(small(), tmp_path / "run", MemoryReporter(), DataSources(train=str(path)), models_dir)


def test_a_failed_compilation_trains_again_without_it(models_dir, tmp_path, monkeypatch):
    """torch.compile fails in the first step (as Triton's compiler did on an H200): the run
    starts again with Python wrappers instead of C++ ones, then on the eager path, says
    why each time, and logs every step once."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from worker.training import acceleration
    from worker.training.acceleration import compile as compiled_layers
    from worker.training.trainer import run_training

    planned_without: list[frozenset[str]] = []
    compute_dtypes: list[str] = []

    def plan_with_compiled_layers(*args, disable=frozenset(), compute_dtype=None, **kwargs):
        planned_without.append(disable)
        compute_dtypes.append(compute_dtype)
        compiled = "compile" not in disable
        return acceleration.Acceleration(
            compile_layers=compiled, cpp_wrapper=compiled and "cpp-wrapper" not in disable
        )

    def failing_backend(graph, example_inputs):
        raise RuntimeError("PassManager::run failed (simulated)")

    def compile_with_a_failing_backend(
        model, *, recompute, dequantize_in_graph=False, dequantize_kernel=False, cpp_wrapper=False
    ):
        layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
        for layer in layers:
            layer.compile(backend=failing_backend)
        return len(layers)

    monkeypatch.setattr(acceleration, "plan_acceleration", plan_with_compiled_layers)
    monkeypatch.setattr(compiled_layers, "compile_decoder_layers", compile_with_a_failing_backend)
    reporter = MemoryReporter()
    result = run_training(small(), tmp_path, reporter, DataSources(train=DEMO_DATASET_ID), models_dir)

    assert (result.global_step, result.stopped_early) == (6, False)
    assert planned_without == [frozenset(), frozenset({"cpp-wrapper"}), frozenset({"cpp-wrapper", "compile"})]
    assert compute_dtypes == ["float32"] * 3  # the run's own: the planner keeps float32
    retries = [message for level, message, _ in reporter.events if "training again" in message]
    assert len(retries) == len(planned_without) - 1  # one retry a fallback, each saying why
    assert all("PassManager::run failed (simulated)" in message for message in retries)
    assert "instead of C++ ones" in retries[0] and "without torch.compile" in retries[1]
    assert [row.step for row in train_rows(reporter)] == [2, 4, 6]
    assert {path.name for path in (tmp_path / "adapter").iterdir()} >= ADAPTER_FILES


def test_a_compilation_failure_after_a_log_is_not_hidden(models_dir, tmp_path, monkeypatch):
    """Once a step is logged, a retry would log it twice: the run fails with the error."""
    import torch
    from trl import SFTTrainer

    from worker.training import acceleration
    from worker.training.callbacks import ReporterCallback
    from worker.training.trainer import run_training

    monkeypatch.setattr(
        acceleration, "plan_acceleration", lambda *a, **k: acceleration.Acceleration(compile_layers=True)
    )
    monkeypatch.setattr(acceleration.Acceleration, "prepare_model", lambda self, model: model)

    def log_then_fail(self, *args, **kwargs):
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, ReporterCallback):
                callback.latest["loss"] = 1.0  # as if a step had been logged
        raise torch._dynamo.exc.TorchRuntimeError("a recompile failed")

    monkeypatch.setattr(SFTTrainer, "train", log_then_fail)
    reporter = MemoryReporter()
    with pytest.raises(torch._dynamo.exc.TorchRuntimeError, match="a recompile failed"):
        run_training(small(), tmp_path, reporter, DataSources(train=DEMO_DATASET_ID), models_dir)
    assert not any("without torch.compile" in message for _, message, _ in reporter.events)


def test_the_same_seed_trains_the_same_whether_or_not_the_run_built_the_model(tmp_path):
    """The first run in a fresh models directory builds the demo model; the second finds it.
    Both must draw the same LoRA init and train to the same adapter (bench/compare_paths.py
    once compared a run that built the model with one that did not)."""
    from safetensors.torch import load_file

    from worker.training.trainer import run_training

    fresh_models_dir = tmp_path / "models"  # empty: the first run builds the demo model
    adapters = []
    for name in ("builds-the-model", "finds-it-built"):
        run_training(
            small(max_steps=2),
            tmp_path / name,
            MemoryReporter(),
            DataSources(train=DEMO_DATASET_ID),
            fresh_models_dir,
        )
        adapters.append(load_file(tmp_path / name / "adapter" / "adapter_model.safetensors"))
    first, second = adapters
    assert first.keys() == second.keys() and first
    assert all((first[name] == second[name]).all() for name in first)
