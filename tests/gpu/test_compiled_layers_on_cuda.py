"""On a CUDA machine: the compiled decoder layers train what the eager layers train.

The CPU checks of tests/worker/training/acceleration/test_compile.py on CUDA,
where Inductor emits Triton kernels and bitsandbytes runs its CUDA ops: the same loss and
adapter gradients as the eager, checkpointed layers (float32 compute), and with dropout on
(bfloat16 and the weights dequantized in the graph, as the planner compiles) the masks of
the forward in the compiled recompute. The graph's dequantization is bitsandbytes' CUDA kernel's, bit
for bit.
Run with `make gpu-test` (DEVELOPERS.md).
"""

from __future__ import annotations

import pytest
import torch

from tests.compiled_layers_support import (
    assert_trains_like,
    lora_dropouts,
    lora_model,
    loss_and_gradients,
)
from worker.training.acceleration.seeded_dropout import use_seeded_dropout

pytestmark = pytest.mark.gpu


def test_compiled_layers_match_eager_checkpointed_layers_on_cuda(tiny_llama_dir) -> None:
    eager = lora_model(tiny_llama_dir, compiled=False, device="cuda")
    compiled = lora_model(tiny_llama_dir, compiled=True, device="cuda")
    # TF32-free float32 on both sides; Triton reorders sums
    assert_trains_like(eager, compiled, (37, 50, 23), "cuda", loss_rel=1e-4, error=1e-3)


@pytest.mark.parametrize(
    ("kernel", "cpp_wrapper"),
    [(False, False), (True, False), (False, True)],
    ids=["torch-ops", "triton-kernel", "cpp-wrapper"],
)
def test_with_dropout_the_compiled_recompute_draws_the_forwards_masks_on_cuda(
    tiny_llama_dir, kernel, cpp_wrapper
) -> None:
    """bfloat16 and the dequantization in the graph (torch ops, or Loraboard's Triton
    kernel; run by Python or, as the planner compiles, by C++ wrappers): the compiled
    layers' gradients with LoRA dropout match the eager checkpointed layers' with the same
    seeded masks, and are far from the gradients of other masks (what a recompute with a
    new draw would give)."""
    import torch._inductor.config

    with torch._inductor.config.patch(cpp_wrapper=False):  # put back after the test
        torch._dynamo.reset()  # no graph of another case
        compiled = lora_model(
            tiny_llama_dir,
            compiled=True,
            dropout=0.5,
            device="cuda",
            dtype=torch.bfloat16,
            dequantize_in_graph=True,
            dequantize_kernel=kernel,
            cpp_wrapper=cpp_wrapper,
        )
        assert torch._inductor.config.cpp_wrapper == cpp_wrapper
        _assert_recompute_draws_the_forwards_masks(tiny_llama_dir, compiled)
        torch._dynamo.reset()


def _assert_recompute_draws_the_forwards_masks(tiny_llama_dir, compiled) -> None:
    eager = lora_model(tiny_llama_dir, compiled=False, dropout=0.5, device="cuda", dtype=torch.bfloat16)
    assert use_seeded_dropout(eager) == lora_dropouts(eager)  # every adapter's dropout
    torch.manual_seed(5)
    _, eager_gradients = loss_and_gradients(eager, 41, "cuda")
    torch.manual_seed(5)
    _, compiled_gradients = loss_and_gradients(compiled, 41, "cuda")
    torch.manual_seed(6)  # other masks
    _, other_mask_gradients = loss_and_gradients(eager, 41, "cuda")
    for name, gradient in eager_gradients.items():
        error = float((compiled_gradients[name] - gradient).norm() / gradient.norm())
        other_masks = float((other_mask_gradients[name] - gradient).norm() / gradient.norm())
        assert error < 0.05 and error < other_masks / 4, (name, error, other_masks)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("nested", [False, True], ids=["plain", "nested"])
def test_graph_dequantization_is_bitsandbytes_cuda_kernel_bit_for_bit(quant_type, nested) -> None:
    import bitsandbytes.functional as bnb_functional

    from worker.training.acceleration.dequant import dequantize_4bit

    generator = torch.Generator(device="cuda").manual_seed(0)
    for shape in ((4096, 4096), (11008, 4096), (33, 17)):
        weight = torch.randn(shape, generator=generator, device="cuda").to(torch.bfloat16)
        packed, quant_state = bnb_functional.quantize_4bit(
            weight, blocksize=64, quant_type=quant_type, compress_statistics=nested
        )
        expected = bnb_functional.dequantize_4bit(packed, quant_state)
        assert torch.equal(dequantize_4bit(packed, quant_state, torch.bfloat16), expected), shape
        compiled = torch.compile(dequantize_4bit)(packed, quant_state, torch.bfloat16)  # Triton's kernel
        assert torch.equal(compiled, expected), shape


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_the_triton_kernel_is_bitsandbytes_cuda_kernel_bit_for_bit(quant_type) -> None:
    """dequantization_kernel.py on the GPU: eagerly, and compiled with an `after` tensor
    (as the compiled backward calls it), bitsandbytes' CUDA kernel's values, bit for bit."""
    import bitsandbytes.functional as bnb_functional

    from worker.training.acceleration.dequant_kernel import dequantize

    generator = torch.Generator(device="cuda").manual_seed(0)
    for shape in ((4096, 4096), (11008, 4096), (4096, 11008), (33, 17)):
        weight = torch.randn(shape, generator=generator, device="cuda").to(torch.bfloat16)
        packed, state = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type=quant_type)
        expected = bnb_functional.dequantize_4bit(packed, state).reshape(-1)
        numel = weight.numel()
        assert torch.equal(dequantize(packed, state.absmax, state.code, numel, 64), expected), shape
        if shape == (4096, 11008):  # one compile: Inductor launches the kernel from its own code
            after = torch.ones(3, device="cuda")
            compiled = torch.compile(dequantize)(packed, state.absmax, state.code, numel, 64, after)
            assert torch.equal(compiled, expected), shape
