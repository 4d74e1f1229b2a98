"""RunConfig (+ the device + the acceleration plan) -> the kwargs of BitsAndBytesConfig,
from_pretrained, peft's LoraConfig and trl's SFTConfig.

Users keep the classic QLoRA names; the installed libraries may call them
differently. Renames are detected by looking at the installed dataclass fields, so
an older or newer transformers/trl is mapped too:

    warmup_ratio     -> warmup_steps as a float in [0, 1) (transformers 5), else warmup_ratio
    group_by_length  -> train_sampling_strategy="group_by_length" (transformers 5), else group_by_length
    gradient_checkpointing -> activation_checkpointing (transformers 5.x), else gradient_checkpointing
    max_seq_length   -> max_length (trl >= 0.20), else max_seq_length; None -> trl's own default (1024)
    save_steps = 0   -> save_strategy="no" (or "epoch" with save_every_epoch)
    validation data  -> eval_strategy="steps" (or evaluation_strategy on old versions)

On a CPU-only worker, GPU-only settings are MAPPED, not refused, each with a
warning event on the run (the run page shows what was really used): a run
configured for a GPU (the classic recipe) still runs, slowly, on a CPU worker,
as the device_map help in the form promises.

    device_map                -> {"": "cpu"}
    fp16 / bf16 mixed precision -> off (float32 training)
    paged_* optimizers (CUDA managed memory) -> adamw_torch
    bnb_4bit_compute_dtype float16 -> float32 (bitsandbytes 0.50 runs float16 4-bit
        matmuls on the CPU, but tens of times slower than float32; bfloat16 is kept)

Refused with ConfigError (the field name in .param): bf16 on a GPU without
bfloat16 support (compute capability < 8.0).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.acceleration_plan import AccelerationPlan
    from core.run_config import RunConfig

CPU_OPTIMIZER = "adamw_torch"
CPU_FLOAT16_WHY = "float16 4-bit matmuls run tens of times slower than float32 on a CPU"
LIBRARIES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "tokenizers")


class ConfigError(ValueError):
    """A run parameter that cannot be honoured on this worker; .param names the field."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass
class DeviceInfo:
    type: str  # "cuda" or "cpu"
    name: str
    count: int = 1
    compute_capability: tuple[int, int] | None = None

    @property
    def bf16_supported(self) -> bool:
        return self.type == "cpu" or (self.compute_capability or (0, 0)) >= (8, 0)


def detect_device() -> DeviceInfo:
    import torch

    if torch.cuda.is_available():
        capability = torch.cuda.get_device_capability(0)
        major, minor = capability
        return DeviceInfo("cuda", torch.cuda.get_device_name(0), torch.cuda.device_count(), (major, minor))
    return DeviceInfo("cpu", "cpu", 1, None)


@dataclass
class MappedArguments:
    """Everything training needs, as plain kwargs (JSON-friendly but for torch dtypes)."""

    quantization: dict[str, Any] | None  # BitsAndBytesConfig kwargs; None = plain (not 4-bit) load
    model: dict[str, Any]  # from_pretrained kwargs (the quantization_config is added by the trainer)
    lora: dict[str, Any]  # peft LoraConfig kwargs
    sft: dict[str, Any]  # trl SFTConfig kwargs, with the installed names
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (level, message, data)
    runtime: dict[str, Any] = field(default_factory=dict)  # what was really used, for reporter.runtime


def map_arguments(
    config: RunConfig,
    device: DeviceInfo,
    checkpoints_dir: Path,
    *,
    has_eval: bool = False,
    acceleration: AccelerationPlan | None = None,
) -> MappedArguments:
    """Map a run config onto the installed libraries for this device (see the module docstring)."""
    events: list[tuple[str, str, dict[str, Any]]] = []

    def mapped(param: str, configured: Any, used: Any, why: str) -> None:
        events.append(
            (
                "warning",
                f"{param}={configured!r} -> {used!r}: {why}",
                {"param": param, "configured": configured, "used": used},
            )
        )

    on_cpu = device.type != "cuda"
    if config.bf16 and not on_cpu and not device.bf16_supported:
        raise ConfigError(
            "bf16",
            f"{device.name} (compute capability {device.compute_capability}) has no bfloat16; use fp16",
        )

    # --- 4-bit quantization ---------------------------------------------------
    quantization, compute_dtype = quantization_kwargs(
        config.use_4bit,
        config.bnb_4bit_compute_dtype,
        config.bnb_4bit_quant_type,
        config.use_nested_quant,
        device,
    )
    if compute_dtype != config.bnb_4bit_compute_dtype:
        mapped("bnb_4bit_compute_dtype", config.bnb_4bit_compute_dtype, compute_dtype, CPU_FLOAT16_WHY)

    # --- from_pretrained --------------------------------------------------------
    # Layers left unquantized (embeddings, norms, head) are loaded in the compute
    # dtype on a GPU (the usual QLoRA setup), in float32 on a CPU.
    device_map: Any = config.device_map
    if on_cpu and device_map != {"": "cpu"}:
        mapped("device_map", device_map, {"": "cpu"}, "this worker has no GPU")
        device_map = {"": "cpu"}
    model_kwargs: dict[str, Any] = {
        "device_map": device_map,
        _dtype_kwarg(): "float32" if on_cpu else compute_dtype,
    }

    # --- LoRA -------------------------------------------------------------------
    lora = {
        "r": config.lora_r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": config.target_modules,  # None: peft's default for the architecture (q_proj, v_proj)
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }

    # --- trainer ----------------------------------------------------------------
    sft = _sft_kwargs(config, checkpoints_dir, has_eval)
    if on_cpu:
        for precision in ("fp16", "bf16"):
            if sft.get(precision):
                mapped(precision, True, False, "mixed precision needs a GPU; training in float32")
                sft[precision] = False
        if config.optim.startswith("paged_"):
            mapped("optim", config.optim, CPU_OPTIMIZER, "paged optimizers page CUDA managed memory")
            sft["optim"] = CPU_OPTIMIZER
        sft[_first_field(("use_cpu", "no_cuda"), _sft_field_names())] = True
        sft["dataloader_pin_memory"] = False

    # --- the acceleration plan (trainer="loraboard") overrides last -------------
    if acceleration is not None:
        model_kwargs.update(_rename_dtype(acceleration.model_kwargs))
        if quantization is not None:
            quantization.update(acceleration.quantization_kwargs)
        sft.update(acceleration.sft_kwargs)
        events += [("info", note, {}) for note in acceleration.notes]

    runtime = {
        "device": dataclasses.asdict(device),
        "trainer": config.trainer,
        "quantization": _jsonable(quantization),
        "from_pretrained": _jsonable(model_kwargs),
        "lora": _jsonable(lora),
        "sft_config": _jsonable(sft),
        "mapped": [data for level, _, data in events if data],
        "acceleration": list(acceleration.notes) if acceleration is not None else [],
        "versions": library_versions(),
    }
    return MappedArguments(quantization, model_kwargs, lora, sft, events, runtime)


def quantization_kwargs(
    use_4bit: bool, compute_dtype: str, quant_type: str, nested: bool, device: DeviceInfo
) -> tuple[dict[str, Any] | None, str]:
    """BitsAndBytesConfig kwargs (None when not 4-bit) and the compute dtype used on this device."""
    if device.type != "cuda" and compute_dtype == "float16":
        compute_dtype = "float32"  # see CPU_FLOAT16_WHY
    if not use_4bit:
        return None, compute_dtype
    kwargs = {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": quant_type,
        "bnb_4bit_compute_dtype": compute_dtype,
        "bnb_4bit_use_double_quant": nested,
    }
    return kwargs, compute_dtype


def _sft_kwargs(config: RunConfig, checkpoints_dir: Path, has_eval: bool) -> dict[str, Any]:
    names = _sft_field_names()
    kwargs: dict[str, Any] = {
        "output_dir": str(checkpoints_dir),
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "max_grad_norm": config.max_grad_norm,
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
        "optim": config.optim,
        "lr_scheduler_type": config.lr_scheduler_type,
        "fp16": config.fp16,
        "bf16": config.bf16,
        "packing": config.packing,
        "seed": config.seed,
        "logging_strategy": "steps",
        "logging_steps": config.logging_steps,
        "report_to": "none",  # metrics go to the Reporter (callbacks.py), not to a tracker
        "disable_tqdm": True,  # progress bars only clutter the worker log
    }
    # gradient_checkpointing is called activation_checkpointing from transformers 5.x on.
    checkpointing = _first_field(("activation_checkpointing", "gradient_checkpointing"), names)
    kwargs[checkpointing] = config.gradient_checkpointing
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen 4-bit inputs and is the recommended one.
        kwargs[f"{checkpointing}_kwargs"] = {"use_reentrant": False}

    # Real (non-pad) tokens for tokens/s (callbacks.py); old versions only count all tokens.
    kwargs["include_num_input_tokens_seen"] = "non_padding" if _accepts_non_padding() else True

    # warmup_ratio: transformers 5 takes a float < 1 in warmup_steps as a ratio.
    if "warmup_ratio" in names:
        kwargs["warmup_ratio"] = config.warmup_ratio
    else:
        kwargs["warmup_steps"] = config.warmup_ratio

    if "train_sampling_strategy" in names:
        kwargs["train_sampling_strategy"] = "group_by_length" if config.group_by_length else "random"
    else:
        kwargs["group_by_length"] = config.group_by_length

    length_name = _first_field(("max_length", "max_seq_length"), names)
    kwargs[length_name] = (
        config.max_seq_length if config.max_seq_length is not None else _sft_default(length_name)
    )

    if config.save_steps > 0:
        kwargs.update(
            save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit
        )
    elif config.save_every_epoch:
        # The Trainer also saves at the end of a last, partial epoch (max_steps mid-epoch).
        kwargs.update(save_strategy="epoch", save_total_limit=config.save_total_limit)
    else:
        kwargs["save_strategy"] = "no"

    eval_name = _first_field(("eval_strategy", "evaluation_strategy"), names)
    if has_eval:
        kwargs.update({eval_name: "steps", "eval_steps": config.eval_steps or config.logging_steps})
    else:
        kwargs[eval_name] = "no"
    return kwargs


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _sft_field_names() -> set[str]:
    from trl import SFTConfig

    return {item.name for item in dataclasses.fields(SFTConfig)}


def _accepts_non_padding() -> bool:
    from trl import SFTConfig

    item = next(
        (item for item in dataclasses.fields(SFTConfig) if item.name == "include_num_input_tokens_seen"), None
    )
    return item is not None and "non_padding" in str(item.metadata.get("help", ""))


def _sft_default(name: str) -> Any:
    from trl import SFTConfig

    return next(item.default for item in dataclasses.fields(SFTConfig) if item.name == name)


def _first_field(candidates: tuple[str, ...], names: set[str]) -> str:
    for name in candidates:
        if name in names:
            return name
    raise RuntimeError(f"the installed trl/transformers has none of the fields {candidates}")


def _dtype_kwarg() -> str:
    """from_pretrained's dtype argument: `dtype` since transformers 4.56, `torch_dtype` before."""
    from packaging.version import Version

    return (
        "dtype" if Version(importlib.metadata.version("transformers")) >= Version("4.56") else "torch_dtype"
    )


def _rename_dtype(kwargs: dict[str, Any]) -> dict[str, Any]:
    renamed = dict(kwargs)
    for name in ("dtype", "torch_dtype"):
        if name in renamed and name != _dtype_kwarg():
            renamed[_dtype_kwarg()] = renamed.pop(name)
    return renamed


def _jsonable(value: Any) -> Any:
    """torch dtypes and paths as strings, so the runtime record is plain JSON."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value).removeprefix("torch.")
