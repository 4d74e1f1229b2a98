"""4-bit weights dequantized by torch ops (worker/training/acceleration/dequant.py), on CPU.

Bit-identical to bitsandbytes' own dequantization for every quant type, nested or not,
in every compute dtype; inside the compiled layers the same loss and gradients as the
eager layers with bitsandbytes' ops, one graph, and no 16-bit weight kept for the backward.
"""

from __future__ import annotations

import pytest
import torch

from tests.compiled_layers_support import (
    assert_trains_like,
    lora_model,
    loss_and_gradients,
    saved_activation_bytes,
)
from worker.training.acceleration.dequant import dequantize_4bit


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("nested", [False, True], ids=["plain", "nested"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_the_weights_are_bitsandbytes_own_bit_for_bit(quant_type, nested, dtype) -> None:
    import bitsandbytes.functional as bnb_functional

    generator = torch.Generator().manual_seed(0)
    # 33 x 17: an odd number of codes and a last block shorter than 64
    for shape in ((64, 128), (96, 40), (33, 17)):
        weight = torch.randn(shape, generator=generator).to(dtype) * 3
        packed, quant_state = bnb_functional.quantize_4bit(
            weight, blocksize=64, quant_type=quant_type, compress_statistics=nested
        )
        expected = bnb_functional.dequantize_4bit(packed, quant_state)
        assert torch.equal(dequantize_4bit(packed, quant_state, dtype), expected), shape


def four_bit_linears(module) -> list:
    """The bitsandbytes 4-bit linear layers in `module`."""
    import bitsandbytes as bnb

    return [m for m in module.modules() if isinstance(m, bnb.nn.Linear4bit)]


@pytest.fixture
def compile_settings_restored():
    """compile_decoder_layers changes a process-wide compile setting: undone after the test."""
    import torch._functorch.config

    with torch._functorch.config.patch(activation_memory_budget=1.0):
        torch._dynamo.reset()
        yield
        torch._dynamo.reset()


def test_inside_the_compiled_layers_they_train_what_bitsandbytes_ops_train(
    tiny_llama_dir, compile_settings_restored
) -> None:
    from torch._dynamo.utils import counters

    from worker.training.acceleration.dequant import linear_4bit_in_torch_ops

    counters.clear()
    eager = lora_model(tiny_llama_dir, compiled=False)
    with_bnb_ops = lora_model(tiny_llama_dir, compiled=True)
    with_torch_ops = lora_model(tiny_llama_dir, compiled=True, dequantize_in_graph=True)

    # every 4-bit weight of the model, none left to bitsandbytes' forward
    base_layers = four_bit_linears(with_torch_ops)
    assert len(base_layers) == len(four_bit_linears(eager)) > 0
    assert all(type(m).forward is linear_4bit_in_torch_ops for m in base_layers)
    assert_trains_like(eager, with_torch_ops, (37, 50))
    # the backward recomputes the 16-bit weights from the 4-bit ones rather than keeping them
    assert saved_activation_bytes(with_torch_ops, 64) == saved_activation_bytes(with_bnb_ops, 64)
    # one graph a compiled model: every layer and length shares it
    assert counters["stats"]["unique_graphs"] == len((with_bnb_ops, with_torch_ops))
    assert not counters["graph_break"]


def test_the_input_gradients_dequantize_in_torch_ops_once_their_gradient_exists(
    tiny_llama_dir, compile_settings_restored
) -> None:
    """No bitsandbytes call is left in the layers' graphs. In the backward each weight is
    dequantized by the recompute and again for its input gradient, and that second one
    depends on the gradient: Inductor cannot merge the two (CSE), nor fuse them into one
    kernel at the recompute unless the gradient already exists there. Merged, the input
    gradients' 16-bit weights lived through the layers' backward: +0.21 GiB at the 7B
    workload's peak."""
    import torch._inductor.config

    graphs = []
    with torch._inductor.config.patch(post_grad_custom_pre_pass=graphs.append):
        model = lora_model(tiny_llama_dir, compiled=True, dequantize_in_graph=True)
        loss_and_gradients(model, 40)
    forward, backward = graphs  # one layer graph, shared by both layers
    weights_per_layer = len(four_bit_linears(model.get_base_model().model.layers[0]))

    def table_lookups(graph) -> list:
        """The nodes reading a 16-entry code table (one per weight): one per dequantization."""
        lookups = []
        for node in graph.nodes:
            source = node.args[0] if node.op == "call_function" and node.args else None
            is_lookup = "index" in str(node.target) and getattr(source, "op", "") == "placeholder"
            if is_lookup and tuple(source.meta["val"].shape) == (16,):
                lookups.append(node)
        return lookups

    def bitsandbytes_calls(graph) -> int:
        return sum("bitsandbytes" in str(node.target) for node in graph.nodes)

    def depends_on_a_gradient(node) -> bool:
        seen, stack = set(), [node]
        while stack:
            current = stack.pop()
            if current.op == "placeholder" and current.name.startswith("tangents"):
                return True
            for parent in current.all_input_nodes:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return False

    # the forward dequantizes each weight of the layer once
    forward_tables = [node.args[0] for node in table_lookups(forward)]
    assert len(set(forward_tables)) == len(forward_tables) == weights_per_layer
    assert bitsandbytes_calls(forward) == bitsandbytes_calls(backward) == 0
    # each dequantization multiplies a table's values by the blocks' scales: where the
    # dependency on a gradient enters (the lookups themselves may be shared, by CSE)
    products = [(lookup.args[0], user) for lookup in table_lookups(backward) for user in lookup.users]
    for_gradients = [table for table, product in products if depends_on_a_gradient(product)]
    recomputed = [table for table, product in products if not depends_on_a_gradient(product)]
    assert len(set(for_gradients)) == len(for_gradients) == weights_per_layer  # every weight's input gradient
    assert recomputed and len(set(recomputed)) == len(recomputed)  # at most once each
