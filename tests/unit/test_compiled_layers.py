"""The compiled decoder layers train exactly what the eager layers train (runs on CPU).

A real 4-bit (bitsandbytes NF4) Llama with peft LoRA adapters: the compiled layers,
whose graph recomputes activations in place of transformers' gradient checkpoint,
against the eager layers with the checkpoint. Same loss and the same adapter
gradients (to float32 rounding) over batches of different lengths, with padding,
and no recompilation for a new length.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("bitsandbytes")

from worker.training.compiled_layers import compile_decoder_layers  # noqa: E402

VOCAB = 256


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=2,
    )
    path = tmp_path_factory.mktemp("llama-4bit")
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def _lora_model(path, compiled: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quantization, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.config.use_cache = False
    if compiled:
        assert compile_decoder_layers(model, recompute=True) == 2
    torch.manual_seed(1)  # the same adapter initialisation for both models
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    )
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, which would hide errors in A's gradient
            torch.nn.init.normal_(parameter, std=0.02)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    return model.train()


def _loss_and_gradients(model, length: int):
    generator = torch.Generator().manual_seed(length)
    input_ids = torch.randint(3, VOCAB, (2, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, length // 2 :] = 0  # one padded row: the masked attention path
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids)
    output.loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return output.loss.item(), gradients


def test_compiled_layers_match_eager_checkpointed_layers(model_dir) -> None:
    from torch._dynamo.utils import counters

    counters.clear()
    eager, compiled = _lora_model(model_dir, compiled=False), _lora_model(model_dir, compiled=True)
    for length in (37, 50, 23):
        eager_loss, eager_gradients = _loss_and_gradients(eager, length)
        compiled_loss, compiled_gradients = _loss_and_gradients(compiled, length)
        assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
        assert compiled_gradients.keys() == eager_gradients.keys() and len(eager_gradients) == 8
        for name, gradient in eager_gradients.items():
            error = (compiled_gradients[name] - gradient).norm() / gradient.norm()
            assert error < 1e-4, name
    # transformers' checkpoint is bypassed (the graph recomputes) and lengths are symbolic:
    # one graph for both layers and every length, no graph breaks
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]
