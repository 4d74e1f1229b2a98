from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.run_config import DEMO_MODEL_ID, RunConfig, field_docs, preset_config


def test_classic_defaults_match_the_recipe() -> None:
    config = RunConfig()
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (64, 16, 0.1)
    assert (config.bnb_4bit_quant_type, config.bnb_4bit_compute_dtype, config.use_nested_quant) == (
        "nf4",
        "float16",
        False,
    )
    assert (config.optim, config.lr_scheduler_type, config.learning_rate) == (
        "paged_adamw_32bit",
        "cosine",
        2e-4,
    )
    assert (config.max_grad_norm, config.warmup_ratio, config.weight_decay) == (0.3, 0.03, 0.001)
    assert config.group_by_length and config.gradient_checkpointing and not config.packing
    assert config.device_map == {"": 0} and config.max_seq_length is None and config.save_steps == 0


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"lora_r": 0}, "lora_r"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"max_steps": 0}, "max_steps"),
        ({"optim": "adamw_imaginary"}, "optim"),
        ({"lr_scheduler_type": "zigzag"}, "lr_scheduler_type"),
        ({"bnb_4bit_quant_type": "int3"}, "bnb_4bit_quant_type"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ({"unknown_knob": 1}, "unknown_knob"),
    ],
)
def test_invalid_values_name_their_field(values: dict, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RunConfig(**values)
    assert field in {str(part) for error in caught.value.errors() for part in error["loc"]}


def test_fp16_and_bf16_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="exclusive"):
        RunConfig(fp16=True, bf16=True)


def test_target_modules_accepts_a_comma_list() -> None:
    assert RunConfig(target_modules="q_proj, v_proj").target_modules == ["q_proj", "v_proj"]
    assert RunConfig(target_modules="all-linear").target_modules == "all-linear"
    assert RunConfig(target_modules="").target_modules is None


def test_every_field_is_documented_and_grouped() -> None:
    docs = field_docs()
    assert set(docs) == set(RunConfig.model_fields)
    for name, doc in docs.items():
        assert doc["description"], name
        assert doc["group"] in {"model", "lora", "quantization", "training", "schedule", "checkpoints"}


def test_demo_preset_is_valid() -> None:
    config = preset_config("demo")
    assert config.model_name == DEMO_MODEL_ID
    assert config.use_4bit
