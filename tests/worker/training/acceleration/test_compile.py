"""The compiled decoder layers train exactly what the eager layers train (runs on CPU).

A real 4-bit (bitsandbytes NF4) Llama with peft LoRA adapters: the compiled layers,
whose graph recomputes activations in place of transformers' gradient checkpoint,
against the eager layers with the checkpoint. Same loss and the same adapter
gradients (to float32 rounding) over batches of different lengths, with padding,
and no recompilation for a new length. With dropout on, the gradient is the
derivative of the loss the forward computed (the backward uses the forward's masks).
tests/gpu/test_compiled_layers_on_cuda.py runs the same checks on CUDA (bf16, philox).
"""

from __future__ import annotations

import pytest

from tests.compiled_layers_support import assert_trains_like, directional_derivative_error, lora_model


def test_compiled_layers_match_eager_checkpointed_layers(tiny_llama_dir) -> None:
    from torch._dynamo.utils import counters

    counters.clear()
    eager, compiled = lora_model(tiny_llama_dir, compiled=False), lora_model(tiny_llama_dir, compiled=True)
    assert_trains_like(eager, compiled, (37, 50, 23))
    # transformers' checkpoint is bypassed (the graph recomputes) and lengths are symbolic:
    # one graph for both layers and every length, no graph breaks
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_with_dropout_the_gradient_is_the_derivative_of_the_forwards_loss(tiny_llama_dir, compiled) -> None:
    # With torch's own dropout in the compiled layers this was 0.23: the recompute drew new masks.
    from torch._dynamo.utils import counters

    counters.clear()
    model = lora_model(tiny_llama_dir, compiled=compiled, dropout=0.5)
    assert directional_derivative_error(model, length=41) < 0.01
    if compiled:  # the dropout's seed and salts are tensors: still one graph for every module
        assert counters["stats"]["unique_graphs"] == 1


def test_the_layers_compile_without_autotuning_or_asserts(tiny_llama_dir) -> None:
    """Timing pointwise kernels' candidates made the 7B run's peak memory; the asserts cost
    CPU on every call of a CPU-bound step (bench/RESULTS.md, round 5)."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(
        size_asserts=True, alignment_asserts=True, **{"triton.autotune_pointwise": True}
    ):
        lora_model(tiny_llama_dir, compiled=True)
        assert not inductor_config.triton.autotune_pointwise
        assert not inductor_config.size_asserts and not inductor_config.alignment_asserts


def test_the_cpp_wrapper_trains_what_the_eager_layers_train(tiny_llama_dir) -> None:
    """Inductor's C++ wrapper around a real 4-bit Llama layer with LoRA, recompute and
    dequantization in the graph (the "cpp-wrapper" feature): the eager layers' loss and gradients."""
    import torch._inductor.config

    eager = lora_model(tiny_llama_dir, compiled=False)
    # torch's own patch restores the setting afterwards (pytest's monkeypatch would delete
    # it: Inductor's settings are not in the module's __dict__).
    with torch._inductor.config.patch(cpp_wrapper=False):
        torch._dynamo.reset()  # Dynamo's cache ignores Inductor's settings: no graph of an earlier test
        compiled = lora_model(tiny_llama_dir, compiled=True, dequantize_in_graph=True, cpp_wrapper=True)
        assert torch._inductor.config.cpp_wrapper
        try:
            assert_trains_like(eager, compiled, (37, 23))
        finally:
            torch._dynamo.reset()  # no C++-wrapped graph left for later tests
    assert not torch._inductor.config.cpp_wrapper
