"""Trainable parameters and the memory estimate: docs/parameters.md's arithmetic, checked on
known models."""

from __future__ import annotations

import pytest

from app.services import estimates
from app.services.estimates import (
    GB,
    KNOWN_SHAPES,
    estimate_memory,
    estimate_run,
    trainable_parameters,
    verdict,
)
from core.run_config import RunConfig, preset_config

LLAMA2_7B = KNOWN_SHAPES["nousresearch/llama-2-7b-chat-hf"]


def test_llama2_7b_q_v_rank_64_is_the_classic_number() -> None:
    # 32 layers x 2 modules x 64 x (4096 + 4096)
    params = trainable_parameters(LLAMA2_7B, 64, None)
    assert params["trainable"] == 33_554_432
    assert params["modules"] == ["q_proj", "v_proj"]


def test_llama2_7b_total_parameters_match_the_published_count() -> None:
    assert estimates.total_parameters(LLAMA2_7B) == 6_738_415_616


def test_all_linear_adapts_every_projection_but_the_head() -> None:
    params = trainable_parameters(LLAMA2_7B, 64, "all-linear")
    attention = 4 * 64 * (4096 + 4096)
    mlp = 3 * 64 * (4096 + 11008)
    assert params["trainable"] == 32 * (attention + mlp) == 159_907_840


def test_grouped_query_attention_has_smaller_k_and_v() -> None:
    mistral = estimates.model_shape("mistralai/Mistral-7B-v0.1")
    params = trainable_parameters(mistral, 16, ["k_proj", "v_proj"])
    assert params["trainable"] == 32 * 2 * 16 * (4096 + 1024)


def test_the_classic_config_resolves_its_model_offline() -> None:
    estimate = estimate_run(RunConfig())
    assert estimate.shape_error is None
    assert estimate.params["trainable"] == 33_554_432


def test_demo_model_shape_needs_no_download() -> None:
    estimate = estimate_run(preset_config("demo"))
    assert estimate.shape.hidden_size == 256 and estimate.shape.num_layers == 4
    # all-linear, r = 16, 4 layers: 4 x 16 x (4 x 512 + 2 x (256 + 512) + (512 + 256))
    assert estimate.params["trainable"] == 4 * 16 * (4 * 512 + 3 * 768)


def test_unknown_model_fails_gracefully() -> None:
    estimate = estimate_run(RunConfig(model_name="/no/such/model/dir"))
    assert estimate.params is None and estimate.memory is None
    assert "is not a hub id, a built-in model or an allowed local directory" in estimate.shape_error


def test_memory_breakdown_sums_to_its_total() -> None:
    config = RunConfig()
    memory = estimate_memory(LLAMA2_7B, config, 33_554_432)
    assert sum(part["bytes"] for part in memory["parts"]) == memory["total_bytes"]
    parts = {part["key"]: part["bytes"] for part in memory["parts"]}
    linear = estimates.linear_parameters(LLAMA2_7B)
    assert parts["weights_4bit"] == linear // 2  # 4 bits per weight
    assert parts["scales"] == pytest.approx(linear * 0.5 / 8, rel=1e-6)  # one fp32 per 64 weights
    assert parts["sixteen_bit"] == (2 * 32000 * 4096 + 65 * 4096) * 2
    assert parts["adapters"] == 33_554_432 * 16
    # The 4-bit 7B base with its scales and 16-bit layers: about 4 GB, "not just 3.5 GB".
    base = parts["weights_4bit"] + parts["scales"] + parts["sixteen_bit"]
    assert 3.7 * GB < base < 4.3 * GB


def test_nested_quantization_and_checkpointing_save_memory() -> None:
    plain = estimate_memory(LLAMA2_7B, RunConfig(), 0)
    nested = estimate_memory(LLAMA2_7B, RunConfig(use_nested_quant=True), 0)
    saved = plain["total_bytes"] - nested["total_bytes"]
    assert saved == pytest.approx(estimates.linear_parameters(LLAMA2_7B) * (0.5 - 0.127) / 8, rel=1e-3)
    without = estimate_memory(LLAMA2_7B, RunConfig(gradient_checkpointing=False), 0)
    assert without["total_bytes"] > plain["total_bytes"] + 10 * GB


def test_activations_grow_with_batch_and_sequence_length() -> None:
    small = estimates.activation_bytes(
        LLAMA2_7B, RunConfig(per_device_train_batch_size=1, max_seq_length=512)
    )
    large = estimates.activation_bytes(
        LLAMA2_7B, RunConfig(per_device_train_batch_size=4, max_seq_length=1024)
    )
    assert large == pytest.approx(8 * small, rel=1e-6)


def test_verdicts_per_gpu() -> None:
    assert verdict(int(20 * GB), 24)["status"] == "fits"
    assert verdict(int(23 * GB), 24)["status"] == "tight"
    assert verdict(int(30 * GB), 24)["status"] == "no"
    classic = estimate_memory(LLAMA2_7B, RunConfig(), 33_554_432)
    assert [item["gb"] for item in classic["verdicts"]] == [24, 40, 80]
    assert all(item["status"] == "fits" for item in classic["verdicts"])
    no_checkpointing = estimate_memory(LLAMA2_7B, RunConfig(gradient_checkpointing=False), 33_554_432)
    assert no_checkpointing["verdicts"][0]["status"] == "no"


@pytest.mark.parametrize(
    ("overrides", "held"),
    [
        ({}, True),  # the default trainer compiles a 7B model's layers
        ({"trainer": "reference"}, False),  # the classic recipe dequantizes one matmul at a time
        ({"bnb_4bit_compute_dtype": "float32"}, False),  # float32 compute is kept, not compiled
        ({"use_4bit": False}, False),  # nothing to dequantize
    ],
)
def test_the_compiled_layers_hold_one_dequantized_layer(overrides, held) -> None:
    config = RunConfig(model_name="NousResearch/Llama-2-7b-chat-hf", **overrides)
    parts = {part["key"]: part["bytes"] for part in estimate_memory(LLAMA2_7B, config, 0)["parts"]}
    # q, k, v, o at 4096 x 4096 and gate, up, down at 4096 x 11008, two bytes each
    assert parts.get("dequantized", 0) == (2 * (4 * 4096 * 4096 + 3 * 4096 * 11008) if held else 0)


def test_the_demo_model_is_too_small_to_compile() -> None:
    config = preset_config("demo", bnb_4bit_compute_dtype="bfloat16")
    assert "dequantized" not in {part["key"] for part in estimate_run(config).memory["parts"]}
