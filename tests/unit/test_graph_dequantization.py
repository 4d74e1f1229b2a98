"""4-bit weights dequantized by torch ops (worker/training/graph_dequantization.py), on CPU.

Bit-identical to bitsandbytes' own dequantization for every quant type, nested or not,
in every compute dtype; inside the compiled layers the same loss and gradients as the
eager layers with bitsandbytes' ops, one graph, and no 16-bit weight kept for the backward.
"""

from __future__ import annotations

import pytest

pytest.importorskip("bitsandbytes")

import torch  # noqa: E402

from tests.compiled_layers_support import (  # noqa: E402
    lora_model,
    loss_and_gradients,
    save_random_llama,
    saved_activation_bytes,
)
from worker.training.graph_dequantization import dequantize_4bit  # noqa: E402


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


def test_inside_the_compiled_layers_they_train_what_bitsandbytes_ops_train(tmp_path) -> None:
    from torch._dynamo.utils import counters

    from worker.training.graph_dequantization import linear_4bit_in_torch_ops

    path = save_random_llama(tmp_path)
    torch._dynamo.reset()
    counters.clear()
    eager = lora_model(path, compiled=False)
    with_bnb_ops = lora_model(path, compiled=True)
    with_torch_ops = lora_model(path, compiled=True, dequantize_in_graph=True)
    import bitsandbytes as bnb

    base_layers = [m for m in with_torch_ops.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(base_layers) == 14 and all(type(m).forward is linear_4bit_in_torch_ops for m in base_layers)
    for length in (37, 50):
        eager_loss, eager_gradients = loss_and_gradients(eager, length)
        loss, gradients = loss_and_gradients(with_torch_ops, length)
        assert loss == pytest.approx(eager_loss, rel=1e-5)
        assert gradients.keys() == eager_gradients.keys()
        for name, gradient in eager_gradients.items():
            assert (gradients[name] - gradient).norm() / gradient.norm() < 1e-4, name
    # the backward recomputes the 16-bit weights from the 4-bit ones rather than keeping them
    assert saved_activation_bytes(with_torch_ops, 64) == saved_activation_bytes(with_bnb_ops, 64)
    assert counters["stats"]["unique_graphs"] == 2  # one per model: every layer and length shares it
    assert not counters["graph_break"]
