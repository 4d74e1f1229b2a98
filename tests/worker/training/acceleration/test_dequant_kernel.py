"""worker/training/acceleration/dequant_kernel.py on CPU, under Triton's interpreter: the values of
graph_dequantization's torch ops and of bitsandbytes, bit for bit (tests/gpu checks the
same against bitsandbytes' CUDA kernel, compiled too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.paths import PROJECT_ROOT

# (quant type, block size, weight shape): shapes with an odd number of codes, a short last
# block, and more than one program's bytes.
CASES = [
    [quant_type, blocksize, shape]
    for quant_type in ("nf4", "fp4")
    for blocksize in (64, 128)
    for shape in ([64, 128], [96, 40], [33, 17], [48, 100])
]

# Run in a child process: the interpreter is chosen when the kernel is defined, and the op
# it backs can be registered once per process. It prints each case once its checks pass.
CHECK = textwrap.dedent(
    """
    import json, sys
    import torch
    import bitsandbytes.functional as bnb_functional
    from worker.training.acceleration.dequant_kernel import dequantize
    from worker.training.acceleration.dequant import dequantize_4bit

    generator = torch.Generator().manual_seed(0)
    for quant_type, blocksize, shape in json.loads(sys.argv[1]):
        weight = (torch.randn(shape, generator=generator) * 3).to(torch.bfloat16)
        packed, state = bnb_functional.quantize_4bit(weight, blocksize=blocksize, quant_type=quant_type)
        n = weight.numel()
        kernel = dequantize(packed, state.absmax, state.code, n, blocksize)
        torch_ops = dequantize_4bit(packed, state, torch.bfloat16).reshape(-1)
        assert kernel.dtype == torch.bfloat16, kernel.dtype
        assert torch.equal(kernel, torch_ops), (quant_type, blocksize, shape)
        assert torch.equal(kernel, bnb_functional.dequantize_4bit(packed, state).reshape(-1))
        waited = dequantize(packed, state.absmax, state.code, n, blocksize, torch.ones(2))
        assert torch.equal(waited, kernel)
        print(json.dumps([quant_type, blocksize, shape]))
    """
)


def test_the_kernel_gives_the_torch_ops_values_bit_for_bit() -> None:
    pytest.importorskip("triton")  # a dev dependency on Linux x86_64 (pyproject.toml)
    environment = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(CASES)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checked = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("[")]
    assert checked == CASES  # every case ran its checks


def test_an_odd_blocksize_is_refused() -> None:
    from worker.training.acceleration.dequant_kernel import dequantize

    packed = torch.zeros(8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="odd"):
        dequantize(packed, torch.ones(1), torch.ones(16), 16, 33)


def test_off_cuda_the_kernel_flag_leaves_the_torch_ops_in_place() -> None:
    """dequantize_in_graph(kernel=True) marks the layers for the kernel; where it does not
    apply (here: CPU tensors) they compute bitsandbytes' own output with the torch ops."""
    pytest.importorskip("triton")
    import bitsandbytes as bnb

    from worker.training.acceleration.dequant import dequantize_in_graph

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(64, 32, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
    layer.load_state_dict({"weight": torch.randn(32, 64)})
    layer = layer.to("cpu")  # quantizes
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    expected = layer(x)
    assert dequantize_in_graph(layer, kernel=True) == 1
    assert type(layer).__name__ == "KernelDequantizedLinear4bit" and layer._loraboard_dequantize_kernel
    assert torch.equal(layer(x), expected)
