"""The one random-weight Llama the tests build where the demo model will not do.

Small enough to train on a CPU in seconds; real enough for transformers, peft, bitsandbytes
and torch.compile (two decoder layers, grouped heads, a vocabulary of VOCAB tokens). A test
that needs another shape passes only what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VOCAB = 256


def tiny_llama_config(**overrides: Any) -> Any:
    """A LlamaConfig: 2 layers, hidden size 64, 4 heads, VOCAB tokens; `overrides` win."""
    from transformers import LlamaConfig

    shape: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 256,
        "pad_token_id": 2,
    }
    return LlamaConfig(**(shape | overrides))


def save_random_llama(path: Path, **overrides: Any) -> Path:
    """tiny_llama_config(**overrides)'s model with the weights torch draws after seed 0, saved to path."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(**overrides)).save_pretrained(path)
    return path
