"""A real 4-bit Llama with LoRA adapters, compiled or eager, for the compiled-layers tests.

Shared by tests/worker/training/acceleration/test_compile.py (CPU) and
tests/gpu/test_compiled_layers_on_cuda.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.tiny_llama import VOCAB


def lora_dropouts(model) -> int:
    """How many dropouts peft gave the model's LoRA adapters: one per adapted module."""
    dropouts = (getattr(module, "lora_dropout", None) for module in model.modules())
    return sum(len(each) for each in dropouts if isinstance(each, torch.nn.ModuleDict))


def lora_model(
    path: Path,
    *,
    compiled: bool,
    dropout: float = 0.0,
    device: str = "cpu",
    dtype=torch.float32,
    dequantize_in_graph: bool = False,
    dequantize_kernel: bool = False,
    cpp_wrapper: bool = False,
):
    """4-bit NF4 base, LoRA on q and v, gradient checkpointing on, as the worker builds it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from worker.training.acceleration.compile import compile_decoder_layers
    from worker.training.acceleration.seeded_dropout import use_seeded_dropout

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
    )
    model = AutoModelForCausalLM.from_pretrained(
        path,
        quantization_config=quantization,
        dtype=dtype,
        attn_implementation="sdpa",
        device_map={"": device},
    )
    model.config.use_cache = False
    if compiled:
        layers = compile_decoder_layers(
            model,
            recompute=True,
            dequantize_in_graph=dequantize_in_graph,
            dequantize_kernel=dequantize_kernel,
            cpp_wrapper=cpp_wrapper,
        )
        assert layers == model.config.num_hidden_layers  # every decoder layer
    torch.manual_seed(1)  # the same adapter initialisation for every model
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=["q_proj", "v_proj"])
    )
    if compiled:
        # every adapter's dropout seeded, as Acceleration.prepare_adapters does
        assert use_seeded_dropout(model) == (lora_dropouts(model) if dropout else 0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, which would hide errors in A's gradient
            torch.nn.init.normal_(parameter, std=0.02)
        if parameter.requires_grad:
            parameter.data = parameter.data.to(dtype)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    return model.train()


def batch(length: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(length)
    input_ids = torch.randint(3, VOCAB, (2, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, length // 2 :] = 0  # one padded row: the masked attention path
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "labels": input_ids.to(device),
    }


def loss_and_gradients(model, length: int, device: str = "cpu") -> tuple[float, dict[str, torch.Tensor]]:
    output = model(**batch(length, device))
    output.loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return output.loss.item(), gradients


def assert_trains_like(
    eager, model, lengths, device: str = "cpu", loss_rel: float = 1e-5, error: float = 1e-4
) -> None:
    """`model`'s loss and adapter gradients are `eager`'s for batches of each length: the loss
    within loss_rel, a gradient for every trainable parameter (LoRA's A and B), each within a
    relative error of `error`."""
    import pytest

    for length in lengths:
        eager_loss, eager_gradients = loss_and_gradients(eager, length, device)
        loss, gradients = loss_and_gradients(model, length, device)
        assert loss == pytest.approx(eager_loss, rel=loss_rel), length
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        assert trainable and gradients.keys() == eager_gradients.keys() == trainable
        for name, gradient in eager_gradients.items():
            assert (gradients[name] - gradient).norm() / gradient.norm() < error, (length, name)


def directional_derivative_error(model, length: int, device: str = "cpu", seed: int = 3) -> float:
    """|g.d - (L(w + e d) - L(w - e d)) / 2e| / |g.d| along d = g / |g|, with dropout's RNG replayed.

    With dropout on, the backward must use the forward's masks (recomputed, not redrawn):
    a gradient from other masks is not the derivative of the loss the forward computed.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(seed)
    model(**batch(length, device)).loss.backward()
    gradient = [p.grad.detach().clone() for p in parameters]
    model.zero_grad()
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in gradient))
    epsilon = 1e-2
    losses = []
    with torch.no_grad():
        for sign in (1.0, -1.0):
            for p, g in zip(parameters, gradient, strict=True):
                p.add_(sign * epsilon * g / norm)
            torch.manual_seed(seed)  # the same dropout masks as the forward above
            with torch.enable_grad():  # the training graph, as in the forward above
                losses.append(model(**batch(length, device)).loss.item())
            for p, g in zip(parameters, gradient, strict=True):
                p.sub_(sign * epsilon * g / norm)
    finite_difference = (losses[0] - losses[1]) / (2 * epsilon)
    return abs(norm.item() - finite_difference) / norm.item()


def saved_activation_bytes(model, length: int, device: str = "cpu") -> int:
    """Bytes autograd keeps from one forward for its backward, beyond the model's own tensors
    (parameters, buffers and the 4-bit weights' quantization statistics)."""
    persistent = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    for module in model.modules():
        quant_state = getattr(getattr(module, "weight", None), "quant_state", None)
        if quant_state is not None:
            persistent.update(t.untyped_storage().data_ptr() for t in (quant_state.absmax, quant_state.code))
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in persistent:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**batch(length, device)).loss
    loss.backward()
    model.zero_grad()
    return sum(saved.values())
