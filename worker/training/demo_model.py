"""The built-in demo model `demo-tiny-llama`: a small Llama with random weights, built locally.

No download is needed for the CPU demo: on first use the model and its tokenizer
are built from fixed seeds, so the same library versions give the same bytes on
every machine. It knows nothing (random weights); the demo shows that a LoRA
adapter on its frozen 4-bit base learns the demo task.

The tokenizer is core/demo_tokenizer.py's byte-level BPE (the server builds the same
one to measure token lengths); the architecture is core/model_catalog.py's.

Weights are drawn with std 1/sqrt(hidden) instead of Llama's 0.02, so the random
layers pass signals on at unit scale; what matters most is the output head (see
HEAD_INIT_STD): with 0.02 there the loss could not go below about 3.7.

The build goes to a temporary sibling directory which is then renamed into place:
a rename is atomic on one filesystem, so two workers racing on first use both end
with a complete model (the loser's copy is discarded).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from core.demo_tokenizer import build_demo_tokenizer
from core.model_catalog import DEMO_ARCHITECTURE
from core.run_config import DEMO_MODEL_ID

SEED = 0

# The output head, drawn explicitly with std 1/sqrt(hidden): after the final
# RMSNorm the hidden state has norm sqrt(hidden), so with std 0.02 the largest
# logit an adapter can reach is about 0.02 x 256 = 5 and the answer never becomes
# confident (measured: the loss stalled at 3.7). With 1/sqrt(hidden) the random
# logits have unit variance and an aligned hidden state reaches sqrt(hidden) = 16.
HEAD_INIT_STD = DEMO_ARCHITECTURE["hidden_size"] ** -0.5
BUILD_MARKER = "loraboard-demo.json"  # written last: its presence means the build is complete


def ensure_demo_model(models_dir: Path) -> Path:
    """The demo model's directory under models_dir, built on first use."""
    target = Path(models_dir) / DEMO_MODEL_ID
    if (target / BUILD_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEMO_MODEL_ID}-", dir=target.parent))
    try:
        build_demo_model(staging)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process renamed its complete build into place first (the
            # target exists and is not empty): keep theirs.
            if not (target / BUILD_MARKER).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_demo_model(directory: Path) -> None:
    """Write the tokenizer, the random-weight model and a README into directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_demo_tokenizer()
    tokenizer.save_pretrained(directory)

    # Round the vocabulary up to a multiple of 64 (tidy shapes for the embedding and head).
    vocab_size = -(-len(tokenizer) // 64) * 64
    config = LlamaConfig(
        vocab_size=vocab_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **DEMO_ARCHITECTURE,
    )
    # The weights are drawn from the CPU generator seeded with SEED, inside a fork that
    # restores its state after: a run that builds the model on first use must draw the same
    # LoRA init as one that finds it built (torch.manual_seed would also reseed CUDA's).
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(SEED)
        model = LlamaForCausalLM(config)
        with torch.no_grad():
            model.lm_head.weight.normal_(mean=0.0, std=HEAD_INIT_STD)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)

    (directory / "README.md").write_text(_readme(config.vocab_size), encoding="utf-8")
    marker = {
        "model_id": DEMO_MODEL_ID,
        "seed": SEED,
        "random_weights": True,
        "head_init_std": HEAD_INIT_STD,
        **DEMO_ARCHITECTURE,
    }
    (directory / BUILD_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def _readme(vocab_size: int) -> str:
    sizes = ", ".join(f"{key}={value}" for key, value in DEMO_ARCHITECTURE.items())
    return f"""# {DEMO_MODEL_ID}

Random weights, built locally by Loraboard (worker/training/demo_model.py, seed {SEED}).
It has learned nothing: it exists so that the CPU demo can show a LoRA adapter
learning the demo task on a frozen 4-bit base, with no download.

- architecture: LlamaForCausalLM, {sizes}, vocab_size={vocab_size}
- tokenizer: byte-level BPE trained on the demo data and some generic English
"""
