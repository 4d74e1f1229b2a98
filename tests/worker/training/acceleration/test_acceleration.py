"""The fast path's planner (core/acceleration_plan.py) and the worker's Acceleration that
carries a plan out: what turns on, per device (runs on CPU)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from core.acceleration_plan import DEFAULT_FEATURES, FUSED_OPTIMIZER
from worker.training.acceleration import Acceleration, plan_acceleration


def test_cpu_changes_nothing() -> None:
    plan = plan_acceleration("cpu", None, gradient_checkpointing=True, packing=False)
    assert plan.model_kwargs == {} and plan.quantization_kwargs == {} and plan.sft_kwargs == {}
    assert not (plan.liger or plan.no_cudnn_attention or plan.fp32_adapters)
    assert plan.notes and "cpu" in plan.notes[0]
    model = torch.nn.Linear(2, 2)
    assert plan.prepare_model(model) is model


def test_cpu_ignores_opt_ins() -> None:
    plan = plan_acceleration("cpu", None, True, False, enable=frozenset({"optimizer", "offload"}))
    assert plan.sft_kwargs == {} and not plan.fp32_adapters


def test_hopper_turns_on_bf16_and_fast_attention() -> None:
    plan = plan_acceleration("cuda", (9, 0), gradient_checkpointing=True, packing=False)
    assert plan.model_kwargs == {"dtype": "bfloat16", "attn_implementation": "sdpa"}
    assert plan.quantization_kwargs == {"bnb_4bit_compute_dtype": "bfloat16"}
    # one dtype end to end: no autocast on top of a bf16 model; steps that do not wait for the GPU
    assert plan.sft_kwargs == {
        "bf16": False,
        "fp16": False,
        "dataloader_pin_memory": True,
        "accelerator_config": {"non_blocking": True},
        "logging_nan_inf_filter": False,
    }
    assert plan.asynchronous_steps and plan.causal_attention_for_right_padding
    assert plan.no_cudnn_attention
    # the recipe's optimizer and memory profile stay unless asked for
    assert "optim" not in plan.sft_kwargs and "activation_offloading" not in plan.sft_kwargs
    assert not plan.fp32_adapters
    assert len(plan.notes) >= 2


def test_liger_only_when_installed() -> None:
    plan = plan_acceleration("cuda", (9, 0), True, False)
    installed = importlib.util.find_spec("liger_kernel") is not None
    assert plan.liger == installed
    if not installed:
        assert any("Liger kernels skipped" in note for note in plan.notes)


def test_pre_ampere_keeps_float16() -> None:
    plan = plan_acceleration("cuda", (7, 5), True, False)
    assert "dtype" not in plan.model_kwargs and plan.quantization_kwargs == {}
    assert "bf16" not in plan.sft_kwargs
    assert any("bfloat16 off" in note for note in plan.notes)


def test_disable_leaves_features_off() -> None:
    plan = plan_acceleration("cuda", (9, 0), True, False, disable=DEFAULT_FEATURES)
    assert plan.model_kwargs == {"attn_implementation": "sdpa"}
    assert plan.quantization_kwargs == {} and plan.sft_kwargs == {}
    assert not (plan.liger or plan.no_cudnn_attention)


def test_causal_attention_for_right_padding_needs_async() -> None:
    plan = plan_acceleration("cuda", (9, 0), True, False, disable=frozenset({"async"}))
    assert not plan.causal_attention_for_right_padding
    assert any("needs async" in note for note in plan.notes)
    assert not plan_acceleration(
        "cuda", (9, 0), True, False, disable=frozenset({"flash"})
    ).causal_attention_for_right_padding


def test_opt_in_fused_optimizer_and_offload() -> None:
    plan = plan_acceleration("cuda", (9, 0), True, False, enable=frozenset({"optimizer", "offload"}))
    assert plan.sft_kwargs["optim"] == FUSED_OPTIMIZER and plan.fp32_adapters
    assert plan.sft_kwargs["activation_offloading"] is True
    # offloading is for checkpointed activations only
    no_ckpt = plan_acceleration("cuda", (9, 0), False, False, enable=frozenset({"offload"}))
    assert "activation_offloading" not in no_ckpt.sft_kwargs


def test_unknown_feature_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown"):
        plan_acceleration("cuda", (9, 0), True, False, enable=frozenset({"warp-drive"}))


def test_prepare_training_casts_only_trainable_parameters_to_fp32() -> None:
    class FakeTrainer:
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)).to(torch.bfloat16)

    trainer = FakeTrainer()
    trainer.model[0].requires_grad_(False)
    Acceleration(fp32_adapters=True).prepare_training(trainer)
    assert trainer.model[0].weight.dtype == torch.bfloat16
    assert trainer.model[1].weight.dtype == torch.float32


def test_the_config_overrides_are_valid_sftconfig_arguments(tmp_path) -> None:
    from trl import SFTConfig

    plan = plan_acceleration("cuda", (9, 0), True, False, enable=frozenset({"optimizer", "offload"}))
    config = SFTConfig(output_dir=str(tmp_path), use_cpu=True, **plan.sft_kwargs)
    assert config.optim == FUSED_OPTIMIZER and config.activation_offloading


@pytest.fixture
def triton_installed(monkeypatch):
    """The planner only compiles where triton exists (GPU machines); pretend it does."""
    from core import acceleration_plan

    real = acceleration_plan.installed_gpu_packages()
    monkeypatch.setattr(acceleration_plan, "installed_gpu_packages", lambda: real | {"triton"})


def test_large_models_are_compiled_with_recompute_in_the_graph(triton_installed) -> None:
    plan = plan_acceleration("cuda", (9, 0), True, False, hidden_size=4096)
    assert plan.compile_layers and plan.recompute_in_graph and plan.dequantize_in_graph
    # the compiled layers fuse RMSNorm, RoPE and SwiGLU themselves
    assert not plan.liger
    assert any("torch.compile" in note for note in plan.notes)


def test_compiled_runs_pad_every_batch_to_a_multiple_of_8(triton_installed, models_dir, tmp_path) -> None:
    """Inductor guards the compiled graph on the first batch's length being a multiple of 8
    (a recompile at the first batch that is not): trl's collator pads every batch to 8."""
    from core.acceleration_plan import SEQUENCE_ALIGNMENT
    from tests.training_support import demo_sft_trainer

    plan = plan_acceleration("cuda", (9, 0), True, False, hidden_size=4096)
    assert plan.sft_kwargs["pad_to_multiple_of"] == SEQUENCE_ALIGNMENT == 8
    assert (
        "pad_to_multiple_of"
        not in plan_acceleration("cuda", (9, 0), True, False, hidden_size=1024).sft_kwargs
    )

    trainer = demo_sft_trainer(models_dir, tmp_path, pad_to_multiple_of=plan.sft_kwargs["pad_to_multiple_of"])
    lengths = {batch["input_ids"].shape[1] for batch in trainer.get_train_dataloader()}
    assert lengths and all(length % 8 == 0 for length in lengths)
    unpadded = demo_sft_trainer(models_dir, tmp_path / "plain")
    assert any(batch["input_ids"].shape[1] % 8 for batch in unpadded.get_train_dataloader())


def test_the_cpp_wrapper_is_opt_in(triton_installed) -> None:
    """g++ compiling each graph's wrapper costs the first step more than a run of a few
    hundred steps earns back: only where asked."""
    plan = plan_acceleration("cuda", (9, 0), True, False, hidden_size=4096)
    assert plan.compile_layers and not plan.cpp_wrapper
    plan = plan_acceleration("cuda", (9, 0), True, False, hidden_size=4096, enable=frozenset({"cpp-wrapper"}))
    assert plan.compile_layers and plan.cpp_wrapper


def test_without_checkpointing_the_compiled_graph_keeps_its_activations(triton_installed) -> None:
    plan = plan_acceleration("cuda", (9, 0), False, False, hidden_size=4096)
    assert plan.compile_layers and not plan.recompute_in_graph


def test_small_or_unknown_models_are_not_compiled(triton_installed) -> None:
    for hidden_size in (None, 1024):
        plan = plan_acceleration("cuda", (9, 0), True, False, hidden_size=hidden_size)
        assert not plan.compile_layers
        assert any("torch.compile skipped" in note for note in plan.notes)


def test_a_float32_run_keeps_its_precision_and_is_not_compiled(triton_installed) -> None:
    plan = plan_acceleration("cuda", (9, 0), True, False, hidden_size=4096, compute_dtype="float32")
    assert "dtype" not in plan.model_kwargs and plan.quantization_kwargs == {}
    assert "bf16" not in plan.sft_kwargs
    assert not plan.compile_layers
    assert any("keeps it" in note for note in plan.notes)
    assert any("for bfloat16 models" in note for note in plan.notes)
    # a 16-bit run gets bfloat16 and the compiled layers
    plan = plan_acceleration("cuda", (9, 0), True, False, hidden_size=4096, compute_dtype="float16")
    assert plan.model_kwargs["dtype"] == "bfloat16" and plan.compile_layers


def test_compile_can_be_left_off(triton_installed) -> None:
    plan = plan_acceleration("cuda", (9, 0), True, False, hidden_size=4096, disable=frozenset({"compile"}))
    assert not plan.compile_layers and not plan.dequantize_in_graph
    # the compiled layers with bitsandbytes' own dequantization
    plan = plan_acceleration("cuda", (9, 0), True, False, hidden_size=4096, disable=frozenset({"dequant"}))
    assert plan.compile_layers and not plan.dequantize_in_graph


def test_prepare_adapters_seeds_lora_dropout_only_for_the_in_graph_recompute() -> None:
    from worker.training.acceleration.seeded_dropout import SeededDropout

    def lora_like() -> torch.nn.Module:
        module = torch.nn.Module()
        module.lora_dropout = torch.nn.ModuleDict({"default": torch.nn.Dropout(0.1)})
        module.weight = torch.nn.Parameter(torch.zeros(2))
        return module

    plain = Acceleration().prepare_adapters(lora_like())
    assert isinstance(plain.lora_dropout["default"], torch.nn.Dropout)
    seeded = Acceleration(compile_layers=True, recompute_in_graph=True).prepare_adapters(lora_like())
    assert isinstance(seeded.lora_dropout["default"], SeededDropout)


def test_the_dequantization_kernel_is_opt_in_and_needs_the_graph_dequantization(triton_installed) -> None:
    plan = plan_acceleration("cuda", (9, 0), True, False, hidden_size=4096)
    assert plan.dequantize_in_graph and not plan.dequantize_kernel
    plan = plan_acceleration(
        "cuda", (9, 0), True, False, hidden_size=4096, enable=frozenset({"dequant-kernel"})
    )
    assert plan.dequantize_in_graph and plan.dequantize_kernel
    assert any("Triton kernel" in note for note in plan.notes)
    plan = plan_acceleration(
        "cuda",
        (9, 0),
        True,
        False,
        hidden_size=4096,
        enable=frozenset({"dequant-kernel"}),
        disable=frozenset({"dequant"}),
    )
    assert not plan.dequantize_in_graph and not plan.dequantize_kernel


def test_the_memory_estimate_counts_a_dequantized_layer_exactly_where_the_plan_dequantizes(
    triton_installed,
) -> None:
    """The web server has no GPU (nor triton): its estimate asks the planner what a GPU
    worker with the fast path's packages would do."""
    import dataclasses

    from app.services.estimates import KNOWN_SHAPES, dequantized_layer_bytes
    from core.run_config import RunConfig

    llama = KNOWN_SHAPES["nousresearch/llama-2-7b-chat-hf"]
    for hidden_size in (1024, 2047, 2048, 4096, 5120):
        for compute_dtype in ("float16", "bfloat16", "float32"):
            plan = plan_acceleration(
                "cuda", (9, 0), True, False, hidden_size=hidden_size, compute_dtype=compute_dtype
            )
            shape = dataclasses.replace(llama, hidden_size=hidden_size)
            counted = dequantized_layer_bytes(shape, RunConfig(bnb_4bit_compute_dtype=compute_dtype)) > 0
            assert counted == plan.dequantize_in_graph, (hidden_size, compute_dtype)


def test_a_feature_that_copies_another_release_of_a_library_is_refused_at_the_start(monkeypatch) -> None:
    """ "async" reproduces trl's and bitsandbytes' own code: with another release installed the
    run stops before loading anything, naming the library, the releases and what to do."""
    from worker.training.acceleration import versions

    plan = plan_acceleration("cuda", (9, 0), True, False)  # async on, as on every GPU run
    installed = {"trl": "1.16", "bitsandbytes": "0.50"}
    monkeypatch.setattr(versions, "release", lambda distribution: installed.get(distribution))
    versions.check_copied_internals(plan)  # the releases the copies come from: fine

    installed["trl"] = "1.17"
    with pytest.raises(versions.CopiedInternalsMismatch, match=r"trl 1\.16.*trl 1\.17.*trl==1\.16\.\*"):
        plan_acceleration("cuda", (9, 0), True, False)
    # without the feature that copies trl, nothing depends on its release
    versions.check_copied_internals(
        plan_acceleration("cuda", (9, 0), True, False, disable=frozenset({"async"}))
    )
    # the real installed releases match the copies (the worker's own environment)
    monkeypatch.undo()
    assert {name: versions.release(name) for name in ("trl", "bitsandbytes")} == {
        "trl": "1.16",
        "bitsandbytes": "0.50",
    }
