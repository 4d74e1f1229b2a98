"""Run config -> the installed transformers/trl/peft/bitsandbytes arguments."""

from __future__ import annotations

import dataclasses

import pytest
from trl import SFTConfig

from core.run_config import RunConfig, preset_config
from worker.training.arguments import ConfigError, DeviceInfo, map_arguments

CPU = DeviceInfo("cpu", "cpu")
OLD_GPU = DeviceInfo("cuda", "Tesla T4", 1, (7, 5))
NEW_GPU = DeviceInfo("cuda", "H100", 1, (9, 0))
SFT_FIELDS = {item.name for item in dataclasses.fields(SFTConfig)}


def test_classic_names_map_onto_the_installed_fields(tmp_path):
    config = RunConfig(warmup_ratio=0.03, group_by_length=True, max_seq_length=None, save_steps=0)
    sft = map_arguments(config, NEW_GPU, tmp_path).sft
    assert set(sft) <= SFT_FIELDS  # every name exists in the installed trl/transformers
    assert "warmup_ratio" not in SFT_FIELDS and sft["warmup_steps"] == 0.03  # transformers 5: a float < 1
    assert sft["train_sampling_strategy"] == "group_by_length"
    assert sft["max_length"] == 1024  # trl's default, made explicit
    assert sft["save_strategy"] == "no"
    assert sft["eval_strategy"] == "no"
    assert sft["optim"] == "paged_adamw_32bit" and sft["fp16"] is False
    config = RunConfig(
        max_seq_length=512, save_steps=50, save_total_limit=3, group_by_length=False, eval_steps=7
    )
    sft = map_arguments(config, NEW_GPU, tmp_path, has_eval=True).sft
    assert (sft["max_length"], sft["save_strategy"], sft["save_steps"], sft["save_total_limit"]) == (
        512,
        "steps",
        50,
        3,
    )
    assert (sft["eval_strategy"], sft["eval_steps"]) == ("steps", 7)
    assert sft["train_sampling_strategy"] == "random"
    SFTConfig(**sft)  # accepted as is
    epochs = map_arguments(RunConfig(save_every_epoch=True, save_total_limit=3), NEW_GPU, tmp_path).sft
    assert (epochs["save_strategy"], epochs["save_total_limit"]) == ("epoch", 3)
    both = map_arguments(RunConfig(save_every_epoch=True, save_steps=5), NEW_GPU, tmp_path).sft
    assert (both["save_strategy"], both["save_steps"]) == ("steps", 5)  # save_steps decides when sent
    SFTConfig(**epochs)


def test_quantization_lora_and_model_kwargs(tmp_path):
    config = RunConfig(
        bnb_4bit_quant_type="fp4", use_nested_quant=True, target_modules="all-linear", lora_r=8
    )
    mapped = map_arguments(config, NEW_GPU, tmp_path)
    assert mapped.quantization == {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "fp4",
        "bnb_4bit_compute_dtype": "float16",
        "bnb_4bit_use_double_quant": True,
    }
    assert mapped.lora["target_modules"] == "all-linear" and mapped.lora["r"] == 8
    assert mapped.model == {"device_map": {"": 0}, "dtype": "float16"}
    assert map_arguments(RunConfig(use_4bit=False), NEW_GPU, tmp_path).quantization is None


def test_cpu_maps_gpu_settings_and_says_so(tmp_path):
    config = RunConfig(fp16=True, optim="paged_adamw_32bit", bnb_4bit_compute_dtype="float16")
    mapped = map_arguments(config, CPU, tmp_path)
    assert mapped.model["device_map"] == {"": "cpu"} and mapped.model["dtype"] == "float32"
    assert mapped.sft["fp16"] is False and mapped.sft["use_cpu"] is True
    assert mapped.sft["optim"] == "adamw_torch"
    assert mapped.quantization["bnb_4bit_compute_dtype"] == "float32"
    mapped_params = {item["param"] for item in mapped.runtime["mapped"]}
    assert mapped_params == {"device_map", "fp16", "optim", "bnb_4bit_compute_dtype"}
    assert all(level == "warning" for level, _, data in mapped.events if data)
    assert mapped.runtime["versions"]["bitsandbytes"] != "not installed"
    # bfloat16 4-bit compute works on a CPU and is kept.
    kept = map_arguments(RunConfig(bnb_4bit_compute_dtype="bfloat16"), CPU, tmp_path)
    assert kept.quantization["bnb_4bit_compute_dtype"] == "bfloat16"


def test_bf16_refused_on_a_gpu_without_it(tmp_path):
    with pytest.raises(ConfigError) as raised:
        map_arguments(RunConfig(bf16=True), OLD_GPU, tmp_path)
    assert raised.value.param == "bf16"
    assert map_arguments(RunConfig(bf16=True), NEW_GPU, tmp_path).sft["bf16"] is True


def test_acceleration_overrides_come_last(tmp_path):
    from worker.training.acceleration import Acceleration

    plan = Acceleration(
        model_kwargs={"attn_implementation": "sdpa"},
        quantization_kwargs={"bnb_4bit_compute_dtype": "bfloat16"},
        sft_kwargs={"optim": "adamw_bnb_32bit"},
        notes=["fast path"],
    )
    mapped = map_arguments(preset_config("classic"), NEW_GPU, tmp_path, acceleration=plan)
    assert mapped.model["attn_implementation"] == "sdpa"
    assert mapped.quantization["bnb_4bit_compute_dtype"] == "bfloat16"
    assert mapped.sft["optim"] == "adamw_bnb_32bit"
    assert ("info", "fast path", {}) in mapped.events
    assert mapped.runtime["acceleration"] == ["fast path"]
