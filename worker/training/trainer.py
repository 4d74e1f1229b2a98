"""QLoRA supervised fine-tuning of one run, top to bottom like trl's scripts/sft.py:
seed, device and arguments, tokenizer and data, 4-bit base + LoRA, trainer, train, save.

Output layout (output_dir):

    checkpoints/checkpoint-N/   every save_steps: adapter + tokenizer + optimizer/scheduler state (resumable)
    metrics.jsonl               every metric row as it was reported (kept across resumes)
    adapter/                    the final adapter: adapter_model.safetensors, adapter_config.json,
                                the tokenizer, run_config.json, metrics.jsonl

A cancelled run (reporter.should_stop()) stops at the next step, writes no final
adapter and returns stopped_early=True; its checkpoints stay.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from core.schedule import derive_schedule
from worker.training.arguments import DeviceInfo, MappedArguments, detect_device, map_arguments
from worker.training.callbacks import ReporterCallback
from worker.training.cpu_4bit_layout import keep_trainable_layout
from worker.training.data import build_datasets
from worker.training.model_loading import load_base_model, load_tokenizer
from worker.training.model_sources import resolve_model
from worker.training.reporting import DataSources, Reporter, TrainingResult
from worker.training.run_timings import RunTimings

if TYPE_CHECKING:
    from core.run_config import RunConfig
    from worker.training.acceleration import Acceleration

OOM_HINT = (
    "out of GPU memory: lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the "
    "effective batch), lower max_seq_length, turn gradient_checkpointing on, or use a smaller lora_r"
)


def run_training(
    config: RunConfig,
    output_dir: Path,
    reporter: Reporter,
    data: DataSources,
    models_dir: Path,
    resume_from_checkpoint: str | bool | None = None,
    *,
    disable_acceleration: frozenset[str] = frozenset(),
    timings: RunTimings | None = None,
    trainer_ready: Callable[[Any], None] | None = None,
) -> TrainingResult:
    """Train one run. disable_acceleration: features of acceleration.py left off (the
    retry after torch.compile failed leaves "compile" off); timings: the run's phase clock,
    kept by that retry; trainer_ready: called with the trainer just before it trains (the
    bench's step clocks, bench/throughput.py: they time the worker's own trainer)."""
    import torch
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    output_dir = Path(output_dir)
    checkpoints_dir, adapter_dir = output_dir / "checkpoints", output_dir / "adapter"
    checkpoints_dir.mkdir(parents=True, exist_ok=True)

    # 1. The model's files, which may be built or fetched first; then seed everything (LoRA
    # init, dropout, data order), so the same seed trains the same whether or not this run
    # is the one that built them.
    timings = timings or RunTimings(reporter)
    with timings.phase("model_files", "finding the model's files"):
        model_path = resolve_model(config.model_name, models_dir, progress=reporter.event)
    set_seed(config.seed)

    # 2. Device, acceleration plan, and the run config mapped onto the installed libraries.
    device = detect_device()
    acceleration = _plan_acceleration(config, device, reporter, model_path, disable_acceleration)
    has_eval = bool(data.validation) or config.eval_fraction > 0
    arguments = map_arguments(config, device, checkpoints_dir, has_eval=has_eval, acceleration=acceleration)
    for level, message, details in arguments.events:
        reporter.event(message, level, details or None)
    reporter.runtime(arguments.runtime)

    # 3. Tokenizer and data: every sample rendered to prompt/completion (or text).
    with timings.phase("data", "reading the data"):
        tokenizer = load_tokenizer(model_path)
        train_dataset, eval_dataset, summary = build_datasets(data.train, data.validation, config, tokenizer)
    reporter.event(
        f"dataset: {summary.num_samples} samples, format {summary.format}",
        "info",
        {"columns": summary.columns},
    )

    # 4. The frozen base (4-bit unless use_4bit is off) with LoRA adapters: the only trainable weights.
    with timings.phase("model_load", "loading the base model" + (" in 4 bit" if config.use_4bit else "")):
        model = _build_model(model_path, config, arguments, acceleration)

    # 5. The trainer. trl tokenizes, truncates to max_length and masks the prompt out of the loss.
    compiling = acceleration is not None and acceleration.compile_layers
    callback = ReporterCallback(reporter, output_dir / "metrics.jsonl", timings, compiling=compiling)
    with timings.phase("trainer", "tokenizing the data and building the trainer"):
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**arguments.sft),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=[callback],
        )
        if acceleration is not None:
            trainer = acceleration.prepare_training(trainer)
    if trainer_ready is not None:
        trainer_ready(trainer)
    # Derived from the samples trl kept (it drops those truncated to no completion at all).
    num_samples = len(cast(Sized, trainer.train_dataset))
    schedule = derive_schedule(config, num_samples, num_gpus=max(trainer.args.world_size, 1))
    trainable, total = _parameter_counts(model)
    reporter.derived(
        {
            **schedule,
            "dataset_format": summary.format,
            "eval_samples": len(cast(Sized, trainer.eval_dataset)) if trainer.eval_dataset is not None else 0,
            "trainable_parameters": trainable,
            "total_parameters": total,
        }
    )

    # 6. Train (from the latest or a given checkpoint when resuming).
    resume = _resume_path(resume_from_checkpoint, checkpoints_dir)
    if resume:
        reporter.event(f"resuming from {resume}")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # the peak of training, not of quantizing the base
    first_phase = (
        "step 1: compiling the decoder layers with torch.compile (about a minute the first time "
        "this model shape trains on this worker's cache; seconds after that)"
        if compiling
        else "training"
    )
    try:
        with timings.phase("train", first_phase):
            trainer.train(resume_from_checkpoint=resume)
    except torch.OutOfMemoryError as error:
        raise MemoryError(f"{OOM_HINT} ({error})") from error
    except Exception as error:
        if acceleration is None:
            raise
        from worker.training.acceleration.compile import forget_compiled_layers, retry_without

        dropped = retry_without(error, acceleration, logged=bool(callback.latest))
        if dropped is None:
            raise
        feature, message = dropped
        reporter.event(message, "warning")
        del trainer, model
        forget_compiled_layers()
        return run_training(
            config,
            output_dir,
            reporter,
            data,
            models_dir,
            resume_from_checkpoint,
            disable_acceleration=disable_acceleration | {feature},
            timings=timings,
            trainer_ready=trainer_ready,
        )
    timings.training_done(
        torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        compiled_graphs=_compiled_graphs() if compiling else None,
        compile_seconds=_compile_seconds() if compiling else None,
    )

    result = TrainingResult(
        adapter_dir=adapter_dir,
        global_step=trainer.state.global_step,
        trained_tokens=trainer.state.num_input_tokens_seen,
        final_metrics=dict(callback.latest),
        stopped_early=callback.stopped_by_request,
    )
    if callback.stopped_by_request:
        reporter.event(
            f"stopped on request at step {result.global_step}; no final adapter written", "warning"
        )
        return result

    # 7. Save the adapter (not the base), with everything needed to use and reproduce it.
    with timings.phase("save", "saving the adapter"):
        trainer.save_model(str(adapter_dir))
        tokenizer.save_pretrained(adapter_dir)
        run_config_json = json.dumps(config.model_dump(mode="json"), indent=2) + "\n"
        (adapter_dir / "run_config.json").write_text(run_config_json)
        if callback.metrics_path.exists():
            shutil.copyfile(callback.metrics_path, adapter_dir / "metrics.jsonl")
    timings.finished()
    reporter.event(f"adapter saved: {adapter_dir}")
    return result


def _plan_acceleration(
    config: RunConfig, device: DeviceInfo, reporter: Reporter, model_path: str, disable: frozenset[str]
) -> Acceleration | None:
    """The GPU fast path (worker/training/acceleration/) for trainer="loraboard"; None for "reference"."""
    if config.trainer != "loraboard":
        return None
    try:
        from worker.training.acceleration import plan_acceleration
    except ImportError as error:
        reporter.event(f"acceleration unavailable ({error}); training as configured", "warning")
        return None
    return plan_acceleration(
        device.type,
        device.compute_capability,
        config.gradient_checkpointing,
        config.packing,
        hidden_size=_hidden_size(model_path),
        compute_dtype=config.bnb_4bit_compute_dtype,
        disable=disable,
    )


def _hidden_size(model_path: str) -> int | None:
    """The model's hidden size from its config (None if it has none or cannot be read here:
    the planner then skips what depends on it, and loading the model reports the real problem)."""
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        return None
    size = getattr(model_config, "hidden_size", None) or getattr(
        getattr(model_config, "text_config", None), "hidden_size", None
    )
    return int(size) if size else None


def _build_model(
    model_path: str, config: RunConfig, arguments: MappedArguments, acceleration: Acceleration | None
) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = load_base_model(model_path, arguments.quantization, arguments.model)
    model.config.use_cache = False  # no KV cache in training (it also conflicts with checkpointing)
    keep_trainable_layout(model)  # evaluation in between must not repack the weights for inference
    if acceleration is not None:
        model = acceleration.prepare_model(model)
    one_dtype = arguments.model.get("dtype", arguments.model.get("torch_dtype")) in (
        "bfloat16",
        torch.bfloat16,
    )
    checkpointing_kwargs = {"use_reentrant": False}
    if config.use_4bit and not one_dtype:
        # Freezes the base, upcasts the layers left in 16 bit (norms, embeddings, head)
        # to float32 for stable training, and turns gradient checkpointing on if asked.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing_kwargs,
        )
    elif config.gradient_checkpointing:
        # bfloat16 end to end (the acceleration plan) or no quantization: keep the dtypes, no upcast.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)
        model.enable_input_require_grads()
    # We wrap with peft ourselves rather than passing peft_config to SFTTrainer: trl
    # then casts QLoRA adapters to bfloat16, which on a CPU is slower and loses the
    # small updates of a short run. Adapters stay float32 (peft's default), except on
    # the bfloat16 fast path where they follow the model's dtype as trl would.
    model = get_peft_model(model, LoraConfig(**arguments.lora))
    if one_dtype:
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.to(torch.bfloat16)
    if acceleration is not None:
        model = acceleration.prepare_adapters(model)
    return model


def _resume_path(resume: str | bool | None, checkpoints_dir: Path) -> str | None:
    """A checkpoint path; True = the latest checkpoint-N under checkpoints_dir (None if there is none)."""
    if resume is None or resume is False:
        return None
    if resume is True:
        candidates = [
            path for path in checkpoints_dir.glob("checkpoint-*") if path.name.split("-")[-1].isdigit()
        ]
        if not candidates:
            return None
        return str(max(candidates, key=lambda path: int(path.name.split("-")[-1])))
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"checkpoint to resume from does not exist: {resume}")
    return str(resume)


def _compiled_graphs() -> int:
    """Graphs torch.compile made in this process: one per layer shape is the aim; more means
    recompiles (each one a pause of seconds to a minute in the steps)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _compile_seconds(at_least_s: float = 1.0) -> dict[str, float]:
    """torch's timers of its compile stages in this process (names as torch gives them, which
    change between releases), those of at least a second: where a long first step went."""
    from torch._dynamo.utils import compile_times

    names, values = compile_times(repr="csv", aggregate=True)
    seconds = {str(name): round(float(str(value)), 2) for name, value in zip(names, values, strict=True)}
    return {name: value for name, value in seconds.items() if value >= at_least_s}


def _parameter_counts(model: Any) -> tuple[int, int]:
    trainable, total = model.get_nb_trainable_parameters()
    return int(trainable), int(total)
