"""bench/experiments.py: the bench-only experiments plug into Loraboard's plan (runs on CPU,
where torch.compile skips CUDA graphs; their speed is measured by bench/run_bench.py on a GPU)."""

from __future__ import annotations

import pytest
import torch

from bench import experiments
from worker.training.acceleration import Acceleration


def test_unknown_experiments_and_plans_without_compiled_layers_are_refused() -> None:
    with pytest.raises(SystemExit, match="unknown experiments"):
        experiments.apply(Acceleration(compile_layers=True), frozenset({"x-nothing"}))
    with pytest.raises(SystemExit, match="does not compile"):
        experiments.apply(Acceleration(), frozenset({"x-cudagraphs"}))


def test_cuda_graphs_pad_lengths_and_mark_each_pass(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    from tests.compiled_layers_support import save_random_llama

    plan = Acceleration(compile_layers=True)
    experiments.apply(plan, frozenset({"x-cudagraphs"}))
    assert plan.sft_kwargs["pad_to_multiple_of"] == experiments.CUDA_GRAPH_LENGTH_MULTIPLE
    model = plan.prepare_model(AutoModelForCausalLM.from_pretrained(save_random_llama(tmp_path)))
    assert len(model.model._forward_pre_hooks) == 1  # on the module holding the layers
    input_ids = torch.randint(3, 200, (2, 17))
    output = model(input_ids=input_ids, labels=input_ids)
    output.loss.backward()
    assert torch.isfinite(output.loss)
