"""bench/experiments.py: the bench-only experiments plug into Loraboard's plan (runs on CPU,
where torch.compile skips CUDA graphs; their speed is measured by bench/run_bench.py on a GPU)."""

from __future__ import annotations

import pytest
import torch

from bench import experiments
from tests.training_support import (  # noqa: F401  (models_dir: a fixture)
    demo_sft_trainer,
    models_dir,
    note_each_training_batch,
    rows_scored_by_trls_head,
)
from worker.training.acceleration import Acceleration


def test_unknown_experiments_and_plans_without_compiled_layers_are_refused() -> None:
    with pytest.raises(SystemExit, match="unknown experiments"):
        experiments.apply(Acceleration(compile_layers=True), frozenset({"x-nothing"}))
    for name in experiments.EXPERIMENTS:
        with pytest.raises(SystemExit, match="which this plan (does not compile|leaves off)"):
            experiments.apply(Acceleration(), frozenset({name}))


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


def test_layer_pairs_train_what_the_eager_layers_train_and_save_less(tmp_path) -> None:
    """Two layers in one compiled graph: the eager layers' loss and gradients, one graph,
    and only the pair's input saved for the backward."""
    from torch._dynamo.utils import counters

    from tests.compiled_layers_support import (
        assert_trains_like,
        lora_model,
        save_random_llama,
        saved_activation_bytes,
    )

    path = save_random_llama(tmp_path)
    eager = lora_model(path, compiled=False)
    per_layer = lora_model(path, compiled=True)
    per_layer_saved = saved_activation_bytes(per_layer, 40)
    torch._dynamo.reset()
    counters.clear()
    paired = lora_model(path, compiled=True)
    assert experiments.pair_decoder_layers(paired) == 1
    assert_trains_like(eager, paired, (37, 23))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert saved_activation_bytes(paired, 40) < per_layer_saved
    # the second layer is still where it was in the model's tree, and only there
    names = [name for name, _ in paired.named_parameters()]
    assert len(names) == len(set(names)) == len(list(eager.named_parameters()))


def test_skip_guards_starts_after_the_warm_up_and_ends_with_the_training() -> None:
    from torch._dynamo import eval_frame

    callbacks: list = []

    class _Trainer:
        model = torch.nn.Linear(1, 1)

        def add_callback(self, callback) -> None:
            callbacks.append(callback)

    plan = Acceleration(compile_layers=True)
    experiments.apply(plan, frozenset({"x-skip-guards"}))
    plan.prepare_trainer(_Trainer())
    (callback,) = callbacks

    class _State:
        global_step = 0

    state = _State()
    try:
        for step in range(experiments.SKIP_GUARDS_AFTER_STEP + 2):
            state.global_step = step
            callback.on_step_begin(None, state, None)
            assert eval_frame._stance.skip_guard_eval_unsafe == (step >= experiments.SKIP_GUARDS_AFTER_STEP)
        callback.on_train_end(None, state, None)
        assert not eval_frame._stance.skip_guard_eval_unsafe
    finally:
        torch.compiler.set_stance("default")


def test_the_blas_experiments_choose_the_library_before_the_model_runs() -> None:
    before = torch.backends.cuda.preferred_blas_library()
    plan = Acceleration(compile_layers=True)
    experiments.apply(plan, frozenset({"x-cublas"}))
    model = torch.nn.Linear(2, 2)
    try:
        assert plan.prepare_model(model) is model
        assert torch.backends.cuda.preferred_blas_library() == torch._C._BlasBackend.Cublas
        if not torch.cuda.is_available():  # a CPU build has no cuBLASLt: the variant fails, loudly
            lt_plan = Acceleration(compile_layers=True)
            experiments.apply(lt_plan, frozenset({"x-cublaslt"}))
            with pytest.raises(RuntimeError, match="cuBLASLt"):
                lt_plan.prepare_model(model)
    finally:
        torch.backends.cuda.preferred_blas_library(before)


def test_fused_qkv_trains_what_three_matmuls_train_with_two_matmuls_fewer(tmp_path) -> None:
    """x-fused-qkv: the eager layers' loss and gradients, with one matmul for q, k and v in
    the forward graph (the siblings' identical matmuls merged by CSE) and in the backward's
    recompute, and each input gradient from its own weight."""
    import bitsandbytes as bnb
    import torch._inductor.config
    from torch._dynamo.utils import counters

    from tests.compiled_layers_support import (
        assert_trains_like,
        lora_model,
        loss_and_gradients,
        save_random_llama,
    )

    def matmuls(graph) -> int:
        return sum(node.target is torch.ops.aten.mm.default for node in graph.nodes)

    plan = Acceleration(compile_layers=True, recompute_in_graph=True)
    with pytest.raises(SystemExit, match="leaves off"):
        experiments.apply(plan, frozenset({"x-fused-qkv"}))
    path = save_random_llama(tmp_path)
    eager = lora_model(path, compiled=False)
    torch._dynamo.reset()
    unfused_graphs: list = []
    with torch._inductor.config.patch(post_grad_custom_pre_pass=unfused_graphs.append):
        loss_and_gradients(lora_model(path, compiled=True, dequantize_in_graph=True), 40)
    torch._dynamo.reset()
    counters.clear()
    graphs: list = []
    with torch._inductor.config.patch(post_grad_custom_pre_pass=graphs.append):
        fused = lora_model(path, compiled=True, dequantize_in_graph=True)
        assert experiments.fuse_sibling_projections(fused) == 2  # one group per layer, under peft
        assert_trains_like(eager, fused, (37, 50))
    torch._dynamo.reset()
    siblings = [
        m for m in fused.modules() if isinstance(m, bnb.nn.Linear4bit) and hasattr(m, "_loraboard_siblings")
    ]
    assert len(siblings) == 6  # q, k and v of both layers
    assert not counters["graph_break"]
    (forward, backward), (unfused_forward, unfused_backward) = graphs, unfused_graphs
    assert matmuls(forward) == matmuls(unfused_forward) - 2
    assert matmuls(backward) == matmuls(unfused_backward) - 2  # the recompute's


def test_the_selecting_head_experiment_puts_trls_selection_back(models_dir, tmp_path, monkeypatch) -> None:  # noqa: F811
    scored = rows_scored_by_trls_head(monkeypatch)  # trl's way on a GPU, forced here
    plan = Acceleration(asynchronous_steps=True)
    experiments.apply(plan, frozenset({"x-selecting-head"}))
    trainer = plan.prepare_trainer(demo_sft_trainer(models_dir, tmp_path, max_steps=2))
    labelled = note_each_training_batch(
        monkeypatch, trainer, lambda inputs: int((inputs["labels"][:, 1:] != -100).sum())
    )
    trainer.train()
    assert type(trainer).__name__ == "UnreadMetricsSFTTrainer"
    assert len(scored) == 2 and scored == labelled  # the labelled positions only
