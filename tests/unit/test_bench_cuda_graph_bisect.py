"""bench/cuda_graph_bisect.py: each case builds the part of Loraboard's path it names (on CPU;
the cases train on a GPU, where CUDA graphs exist)."""

from __future__ import annotations

import pytest
import torch

from bench import cuda_graph_bisect


@pytest.mark.parametrize("case", cuda_graph_bisect.CASES)
def test_each_case_adds_its_part(case, tmp_path) -> None:
    import bitsandbytes as bnb

    from worker.training.acceleration.seeded_dropout import SeededDropout

    model = cuda_graph_bisect.build_model(case, tmp_path, "cpu")
    modules = list(model.modules())
    quantized = [m for m in modules if isinstance(m, bnb.nn.Linear4bit)]
    in_torch_ops = [m for m in quantized if type(m).__name__.startswith("GraphDequantized")]
    assert len(quantized) == (0 if case in ("plain", "static") else 14)
    assert len(in_torch_ops) == (0 if case in ("plain", "static", "bnb-ops") else 14)
    lora = [name for name, p in model.named_parameters() if p.requires_grad and "lora_" in name]
    assert len(lora) == (
        8 if case in ("lora", "dropout", "bnb-ops", "no-cudagraphs", "static-dropout") else 0
    )
    assert len([m for m in modules if isinstance(m, SeededDropout)]) == (
        4 if case in ("dropout", "bnb-ops", "no-cudagraphs", "static-dropout") else 0
    )
    layers = [m for m in modules if type(m).__name__ == "CompiledLlamaDecoderLayer"]
    assert len(layers) == 2 and all(layer._compiled_call_impl is not None for layer in layers)
    assert model.training and torch.is_grad_enabled()


def test_unknown_cases_are_refused() -> None:
    with pytest.raises(SystemExit, match="unknown cases"):
        cuda_graph_bisect.main(["--cases", "plain,everything"])
