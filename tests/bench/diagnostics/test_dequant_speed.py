"""bench/diagnostics/dequant_speed.py times CUDA kernels; on a machine without CUDA it says so and stops."""

from __future__ import annotations

import pytest
import torch

from bench.diagnostics import dequant_speed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_without_cuda_it_refuses_with_a_reason() -> None:
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        dequant_speed.main([])


def test_the_shapes_are_the_7b_projections() -> None:
    from bench.workload import model_config

    config = model_config(tiny=False)
    square = (config.hidden_size, config.hidden_size)
    up = (config.intermediate_size, config.hidden_size)
    assert set(dequant_speed.SHAPES) == {square, up, up[::-1]}
