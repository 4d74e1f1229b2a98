"""Bench-only experiments on top of Loraboard's plan: ideas measured here before any of
them reaches the worker (worker/training/acceleration/). Named in a variant with an
"x-" word, e.g. `lb+x-cudagraphs`.

x-cudagraphs  The compiled decoder layers replayed as CUDA graphs (torch.compile's
              "reduce-overhead" mode), recorded once per padded length: trl pads
              lengths to a multiple of 64, so a 1024-token run records at most 16;
              a forward pre-hook on the module holding the layers tells CUDA graph
              trees where each pass begins. Aimed at the ~100 ms a step the CPU spends
              launching the layers' kernels (bench/RESULTS.md, round 3). Three runs on
              H200s (2026-11-30) died with a segmentation fault (exit -11) in the
              first compiled backward's generated code (faulthandler's stack in
              bench/results/h200-round4-call2.json), with bitsandbytes' ops in the
              graph or without them. Round 6 (bench/cuda_graph_bisect.py, small model):
              a plain bf16 Llama's compiled layers crash the same way with symbolic
              lengths; with static shapes the worker's whole path runs.
x-shared-dequant  Round 4's version (a) of the "dequant" feature: each 4-bit weight
              dequantized in torch ops and used by a plain F.linear, so the compiled
              backward dequantizes once for both the recompute and the input gradient
              (the default dequantizes again for the input gradient, after it). H200
              2026-11-30: +17% tokens/s over round 3's default in the same call, but
              +0.21 GiB at peak, over the reference's memory. Round 6: no faster than
              today's default (7,896 against 8,011 and 7,656), 5.970 GiB.
x-bnb-input-grad  Round 4's version (c): the input gradient's dequantization by
              bitsandbytes' own op (opaque to Inductor) instead of torch ops.
x-layer-pairs Two decoder layers per compiled graph: the first of each pair runs the
              second inside its own compiled forward, the second passes its input
              through. Half the graph calls, so half of Dynamo's guard checks and of
              AOTAutograd's wrappers (6-7 and 11-12 ms of CPU a step in round 5's
              profile), and with the recompute in the graph only each pair's input is
              saved (half of the 31 x 32 MiB alive at round 5's peak). Bench-only:
              hidden states the model reports per layer are then per pair. H200 round 6:
              8,857 against the default's 9,284 tokens/s, at 6.011 GiB (the first layer's
              recomputed activations live through the second's backward).
x-fused-qkv   Each attention's q, k and v 4-bit projections as one matmul in the compiled
              layers: each sibling computes the same concatenated weight and matmul and
              takes its slice, and AOTAutograd's CSE keeps one of each (2 matmuls fewer in
              the forward and in the recompute per layer, checked on CPU); each input
              gradient stays the sibling's own. H200 2026-11-30 (round 6, one run): 8,571
              tokens/s against the default's 9,284 in the same call: slower, so not a
              feature.
x-skip-guards Dynamo's guards on the compiled layers left unevaluated once the warm-up
              steps have compiled them (torch.compiler.set_stance with
              skip_guard_eval_unsafe): round 5's profile put 6-7 ms a step in 32 cache
              lookups. Unsafe as a default: a batch that needs a graph the warm-up did not
              compile (a first batch without padding) would run a wrong one. H200 round
              6: 9,125 against the default's 9,284 tokens/s (no gain).
x-cublas, x-cublaslt  torch's matmuls through cuBLAS, or cuBLASLt, always, instead of
              torch's pick per call (torch.backends.cuda.preferred_blas_library): the
              1,154 matmuls of a step cost 27-32 ms of CPU in round 5's profile, more than
              their 35 ms on the GPU; the two libraries' host costs per call differ.
              H200 round 6, x-cublaslt: 8,411 against the default's 9,284 tokens/s.
x-selecting-head  trl's fused LM head selecting the labelled positions before scoring
              them, as trl does on a GPU and as the default did until round 8: two waits
              for the GPU a step (the selection's shape). The default scores every
              position and zeroes the ignored ones (unread_metrics.every_position_scored).
              H200 round 8: 10,433 against the every-position head's 10,303 tokens/s
              without "flash" (call 1), 10,174 against 10,358 with it (call 2).
"""

from __future__ import annotations

from typing import Any

import torch

from worker.training.acceleration import dequant as graph_dequantization
from worker.training.acceleration.class_swap import cached_subclass

CUDA_GRAPH_LENGTH_MULTIPLE = 64


def apply(plan: Any, names: frozenset[str]) -> None:
    """Turn the experiments `names` on in `plan` (an Acceleration), in place."""
    unknown = names - set(EXPERIMENTS)
    if unknown:
        raise SystemExit(f"unknown experiments {sorted(unknown)}; known: {sorted(EXPERIMENTS)}")
    for name in sorted(names):
        EXPERIMENTS[name](plan)


def _require_compiled_layers(plan: Any, name: str) -> None:
    if not plan.compile_layers:
        raise SystemExit(f"{name} changes how the compiled layers run, which this plan does not compile")


def _then_in_prepare_model(plan: Any, step: Any) -> None:
    """Make the plan's prepare_model run step(model) after its own work (the layers' compile
    included, which is lazy: step still comes before the first trace)."""
    prepare_model = plan.prepare_model

    def prepare_model_then_step(model: Any) -> Any:
        model = prepare_model(model)
        step(model)
        return model

    plan.prepare_model = prepare_model_then_step


def cuda_graphs(plan: Any) -> None:
    from transformers.modeling_layers import GradientCheckpointingLayer

    _require_compiled_layers(plan, "x-cudagraphs")
    plan.sft_kwargs["pad_to_multiple_of"] = CUDA_GRAPH_LENGTH_MULTIPLE
    plan.notes.append(
        f"experiment: compiled layers as CUDA graphs, lengths padded to {CUDA_GRAPH_LENGTH_MULTIPLE}"
    )

    def use_cuda_graphs(model: Any) -> None:
        layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
        for layer in layers:
            layer.compile(dynamic=True, mode="reduce-overhead")  # replaces the plan's compile
        # On the (uncompiled) module holding the layers: peft calls the top model's forward
        # directly, bypassing its hooks, and a hook on a compiled layer would be traced.
        holder = next(
            module
            for module in model.modules()
            for child in module.children()
            if isinstance(child, torch.nn.ModuleList) and layers[0] in child
        )
        holder.register_forward_pre_hook(lambda _module, _args: torch.compiler.cudagraph_mark_step_begin())

    _then_in_prepare_model(plan, use_cuda_graphs)


def shared_dequantization(plan: Any) -> None:
    _require_compiled_layers(plan, "x-shared-dequant")
    if not plan.dequantize_in_graph:
        raise SystemExit("x-shared-dequant changes the dequant feature, which this plan leaves off")

    def linear_with_one_dequantization(self: Any, x: torch.Tensor) -> torch.Tensor:
        compute_dtype = self.compute_dtype or x.dtype
        weight = graph_dequantization.dequantize_4bit(self.weight, self.weight.quant_state, compute_dtype)
        output = torch.nn.functional.linear(x.to(compute_dtype), weight, self.bias)
        return output.to(x.dtype)

    # Read when prepare_model gives the layers their forward; one variant per process.
    graph_dequantization.linear_4bit_in_torch_ops = linear_with_one_dequantization
    plan.notes.append("experiment: the backward shares one dequantization per weight (round 4's version a)")


def bitsandbytes_input_gradient(plan: Any) -> None:
    import bitsandbytes.functional as bnb_functional

    _require_compiled_layers(plan, "x-bnb-input-grad")

    def backward(ctx: Any, grad_output: Any) -> tuple[Any, None, None, None]:
        grad_x = None
        if ctx.needs_input_grad[0]:
            (packed,) = ctx.saved_tensors
            weight = bnb_functional.dequantize_4bit(packed, ctx.quant_state).to(grad_output.dtype)
            grad_x = grad_output @ weight
        return grad_x, None, None, None

    graph_dequantization._Linear4bit.backward = staticmethod(backward)  # type: ignore[method-assign]
    plan.notes.append("experiment: input gradients dequantized by bitsandbytes' op (round 4's version c)")


def layer_pairs(plan: Any) -> None:
    _require_compiled_layers(plan, "x-layer-pairs")
    if not plan.recompute_in_graph:
        raise SystemExit("x-layer-pairs needs the recompute in the graph (gradient checkpointing)")
    _then_in_prepare_model(plan, pair_decoder_layers)
    plan.notes.append("experiment: two decoder layers per compiled graph")


def pair_decoder_layers(model: Any) -> int:
    """Make each even decoder layer of `model` (compiled by compile_decoder_layers with the
    recompute in the graph) run the next one inside its graph; returns the number of pairs."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    if not all(hasattr(type(layer), "_loraboard_plain_forward") for layer in layers):
        raise SystemExit("x-layer-pairs expects layers compiled with the recompute in the graph")
    pairs = list(zip(layers[0::2], layers[1::2], strict=False))
    for first, second in pairs:
        # A plain attribute, not a submodule: the second layer keeps its one place in the
        # model's tree (parameter names, state dict, the adapter peft saves).
        object.__setattr__(first, "_loraboard_second", second)
        first.__class__ = cached_subclass(type(first), "Paired", forward=_pair_forward)
        second.__class__ = cached_subclass(type(second), "PassedThrough", forward=_pass_through)
        second._compiled_call_impl = None  # the pair's graph runs it; alone it only passes on
    return len(pairs)


def _pair_forward(self: Any, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
    second = self._loraboard_second
    hidden_states = type(self)._loraboard_plain_forward(self, hidden_states, *args, **kwargs)
    return type(second)._loraboard_plain_forward(second, hidden_states, *args, **kwargs)


def _pass_through(self: Any, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
    return hidden_states


def fused_qkv(plan: Any) -> None:
    _require_compiled_layers(plan, "x-fused-qkv")
    if not plan.dequantize_in_graph:
        raise SystemExit("x-fused-qkv fuses the graph dequantization, which this plan leaves off")
    _then_in_prepare_model(plan, fuse_sibling_projections)
    plan.notes.append("experiment: each attention's q, k and v projections as one 4-bit matmul")


class _SiblingLinear4bit(torch.autograd.Function):
    """Output `index` of several 4-bit linears on one input (an attention's q, k and v), as
    a slice of one matmul with the siblings' weights dequantized side by side.

    Each sibling's call computes the same concatenated weight and the same matmul, and
    AOTAutograd's common-subexpression elimination keeps one of each: one weight kernel and
    one matmul (forward and recompute) where there were three. The input gradient is the
    sibling's own, from its own weight dequantized after its gradient (as in _Linear4bit),
    so no fused weight lives into the backward.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        index: int,
        quant_states: tuple[Any, ...],
        layouts: tuple[Any, ...],
        *packed: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(packed[index])
        ctx.quant_state = quant_states[index]
        ctx.layout = layouts[index]
        ctx.siblings = len(packed)
        weights = [
            graph_dequantization._dequantize(weight, graph_dequantization._statistics(state), layout)
            for weight, state, layout in zip(packed, quant_states, layouts, strict=True)
        ]
        fused = torch.nn.functional.linear(x, torch.cat(weights))
        start = sum(layout[0][0] for layout in layouts[:index])
        return fused[..., start : start + layouts[index][0][0]]

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_x = None
        if ctx.needs_input_grad[0]:
            (packed,) = ctx.saved_tensors
            weight = graph_dequantization._dequantize(
                packed, graph_dequantization._statistics(ctx.quant_state), ctx.layout, after=grad_output
            )
            grad_x = grad_output @ weight
        return (grad_x, None, None, None) + (None,) * ctx.siblings


def sibling_linear_4bit_in_torch_ops(self: Any, x: torch.Tensor) -> torch.Tensor:
    """linear_4bit_in_torch_ops for one of the siblings made by fuse_sibling_projections."""
    index, siblings = self._loraboard_siblings
    compute_dtype = self.compute_dtype or x.dtype
    quant_states = tuple(sibling.weight.quant_state for sibling in siblings)
    layouts = tuple(graph_dequantization._Layout.of(state, compute_dtype) for state in quant_states)
    weights = tuple(sibling.weight for sibling in siblings)
    output = _SiblingLinear4bit.apply(x.to(compute_dtype), index, quant_states, layouts, *weights)
    return output.to(x.dtype)


# The projections that read the same input in transformers' attention modules.
SIBLING_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def fuse_sibling_projections(model: Any) -> int:
    """Make each attention's q, k and v 4-bit layers (already dequantizing in torch ops) one
    matmul in the compiled graph; returns how many groups. Before the layers' first forward
    (when torch.compile traces them), with or without peft's LoRA layers around them.

    Only where the three are 4-bit layers of one input size and compute dtype, without bias;
    other attentions keep one matmul per projection.
    """
    groups = 0
    for module in model.modules():
        # peft's LoRA layers, if already there, hold the 4-bit layers as base_layer
        found = [getattr(module, name, None) for name in SIBLING_PROJECTIONS]
        found = [getattr(s, "base_layer", s) for s in found]
        siblings = [
            s
            for s in found
            if s is not None and type(s).forward is graph_dequantization.linear_4bit_in_torch_ops
        ]
        if len(siblings) != len(SIBLING_PROJECTIONS):
            continue
        if len({(s.in_features, s.compute_dtype) for s in siblings}) != 1 or any(
            s.bias is not None for s in siblings
        ):
            continue
        for index, sibling in enumerate(siblings):
            # A plain attribute, not a submodule: each layer keeps its one place in the model.
            object.__setattr__(sibling, "_loraboard_siblings", (index, tuple(siblings)))
            sibling.__class__ = cached_subclass(
                type(sibling), "Fused", forward=sibling_linear_4bit_in_torch_ops
            )
        groups += 1
    return groups


# Steps before the guards are skipped: the bench's untimed warm-up (run_bench --warmup).
SKIP_GUARDS_AFTER_STEP = 8


def skip_guards(plan: Any) -> None:
    from transformers import TrainerCallback

    _require_compiled_layers(plan, "x-skip-guards")

    class _SkipGuardsAfterWarmUp(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == SKIP_GUARDS_AFTER_STEP:
                torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            torch.compiler.set_stance("default")

    prepare_trainer = plan.prepare_trainer

    def prepare_trainer_skipping_guards(trainer: Any) -> Any:
        trainer = prepare_trainer(trainer)
        trainer.add_callback(_SkipGuardsAfterWarmUp())
        return trainer

    plan.prepare_trainer = prepare_trainer_skipping_guards
    plan.notes.append(f"experiment: Dynamo's guards skipped after step {SKIP_GUARDS_AFTER_STEP}")


def selecting_head(plan: Any) -> None:
    if not plan.asynchronous_steps:
        raise SystemExit("x-selecting-head changes the async feature's loss, which this plan leaves off")
    prepare_training = plan.prepare_training

    def prepare_training_selecting(trainer: Any) -> Any:
        trainer = prepare_training(trainer)
        trainer.scores_every_position = False
        return trainer

    plan.prepare_training = prepare_training_selecting
    plan.notes.append("experiment: trl's fused LM head selects the labelled positions (two waits a step)")


def _blas_library(name: str) -> Any:
    def use(plan: Any) -> None:
        _require_compiled_layers(plan, f"x-{name}")
        # Process-wide, and one variant per process; read by every matmul, the first one after this.
        _then_in_prepare_model(plan, lambda _model: torch.backends.cuda.preferred_blas_library(name))
        plan.notes.append(f"experiment: every matmul through {name}")

    return use


EXPERIMENTS = {
    "x-cudagraphs": cuda_graphs,
    "x-shared-dequant": shared_dequantization,
    "x-bnb-input-grad": bitsandbytes_input_gradient,
    "x-layer-pairs": layer_pairs,
    "x-fused-qkv": fused_qkv,
    "x-skip-guards": skip_guards,
    "x-selecting-head": selecting_head,
    "x-cublas": _blas_library("cublas"),
    "x-cublaslt": _blas_library("cublaslt"),
}
