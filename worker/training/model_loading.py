"""Loading the frozen base model and its tokenizer: the same code for training and chat."""

from __future__ import annotations

from typing import Any


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        # Llama-2's tokenizer has no pad token; padding is masked out of the loss and
        # the attention, so reusing EOS for it is the usual, harmless choice.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(path: str, quantization: dict[str, Any] | None, model_kwargs: dict[str, Any]) -> Any:
    """from_pretrained with a BitsAndBytesConfig when quantization is set (4-bit NF4/FP4), else plain."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {
        key: _dtype(value) if key in ("dtype", "torch_dtype") else value
        for key, value in model_kwargs.items()
    }
    if quantization is not None:
        bnb = {
            key: _dtype(value) if key == "bnb_4bit_compute_dtype" else value
            for key, value in quantization.items()
        }
        kwargs["quantization_config"] = BitsAndBytesConfig(**bnb)
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def _dtype(value: Any) -> Any:
    import torch

    return getattr(torch, value) if isinstance(value, str) and value != "auto" else value
