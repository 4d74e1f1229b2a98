"""On a CUDA machine: the compiled decoder layers train what the eager layers train.

The CPU checks of tests/unit/test_compiled_layers.py on CUDA, where Inductor emits
Triton kernels and bitsandbytes runs its CUDA ops: the same loss and adapter gradients
as the eager, checkpointed layers (float32 compute), and with dropout on, a gradient
that is the derivative of the forward's loss. Run with `make gpu-test` (DEVELOPERS.md).
"""

from __future__ import annotations

import pytest

from tests.compiled_layers_support import (
    directional_derivative_error,
    lora_model,
    loss_and_gradients,
    save_random_llama,
)

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_random_llama(tmp_path_factory.mktemp("llama-4bit"))


def test_compiled_layers_match_eager_checkpointed_layers_on_cuda(model_dir) -> None:
    eager = lora_model(model_dir, compiled=False, device="cuda")
    compiled = lora_model(model_dir, compiled=True, device="cuda")
    for length in (37, 50, 23):
        eager_loss, eager_gradients = loss_and_gradients(eager, length, "cuda")
        compiled_loss, compiled_gradients = loss_and_gradients(compiled, length, "cuda")
        assert compiled_loss == pytest.approx(eager_loss, rel=1e-4)
        for name, gradient in eager_gradients.items():
            error = (compiled_gradients[name] - gradient).norm() / gradient.norm()
            assert error < 1e-3, name  # TF32-free float32 on both sides; Triton reorders sums


def test_with_dropout_the_gradient_is_the_derivative_of_the_forwards_loss_on_cuda(model_dir) -> None:
    model = lora_model(model_dir, compiled=True, dropout=0.5, device="cuda")
    assert directional_derivative_error(model, length=41, device="cuda") < 0.01
