"""The built-in demo model `demo-tiny-llama`: a small Llama with random weights, built locally.

No download is needed for the CPU demo: on first use the model and its tokenizer
are built from fixed seeds, so the same library versions give the same bytes on
every machine. It knows nothing (random weights); the demo shows that a LoRA
adapter on its frozen 4-bit base learns the demo task.

The tokenizer is a byte-level BPE trained on the demo data plus some generic
English: byte-level so it encodes any text, and with the demo's words as single
tokens so the antonym task is a token -> token mapping that a tiny model learns
in a minute or two (a character-level tokenizer would make every answer several
tokens long: more to learn, longer sequences; not tried).

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

from core.model_catalog import DEMO_ARCHITECTURE, DEMO_TOKENIZER_VOCAB_SIZE
from core.run_config import DEMO_MODEL_ID

SEED = 0

# The output head, drawn explicitly with std 1/sqrt(hidden): after the final
# RMSNorm the hidden state has norm sqrt(hidden), so with std 0.02 the largest
# logit an adapter can reach is about 0.02 x 256 = 5 and the answer never becomes
# confident (measured: the loss stalled at 3.7). With 1/sqrt(hidden) the random
# logits have unit variance and an aligned hidden state reaches sqrt(hidden) = 16.
HEAD_INIT_STD = DEMO_ARCHITECTURE["hidden_size"] ** -0.5
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
BUILD_MARKER = "loraboard-demo.json"  # written last: its presence means the build is complete

GENERIC_TEXT = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Please answer the question. What is the meaning of this word? Give me an example, please.
Language models read text as tokens and predict the next token from the ones before it.
The weather today is mild, with a chance of rain in the evening and clear skies tomorrow.
She opened the window, looked at the garden and wrote a short letter to her brother.
Numbers such as 1, 2, 3, 10, 42 and 2024 appear in text; so do symbols like #, @, %, & and *.
You are a helpful assistant. Answer with one word. Thank you! Sure, here is the answer.
"""


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

    tokenizer = build_tokenizer()
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


def build_tokenizer():
    """A byte-level BPE PreTrainedTokenizerFast that adds <s> in front of every text, like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [SPECIAL_TOKENS[name] for name in ("unk_token", "bos_token", "eos_token", "pad_token")]
    trainer = trainers.BpeTrainer(
        vocab_size=DEMO_TOKENIZER_VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text encodes
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=DEMO_ARCHITECTURE["max_position_embeddings"],
        **SPECIAL_TOKENS,
    )


def _tokenizer_corpus() -> list[str]:
    from worker.training.demo_dataset import PAIRS, TEMPLATES

    lines = GENERIC_TEXT.splitlines()
    # The Llama-2 chat markers, so they become few tokens.
    lines += ["[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n[/INST]"] * 20
    for left, right in PAIRS:
        for word, answer in ((left, right), (right, left)):
            for template in TEMPLATES:
                lines.append(f"[INST] {template.format(word=word)} [/INST] {answer}")
    return lines


def _readme(vocab_size: int) -> str:
    sizes = ", ".join(f"{key}={value}" for key, value in DEMO_ARCHITECTURE.items())
    return f"""# {DEMO_MODEL_ID}

Random weights, built locally by Loraboard (worker/training/demo_model.py, seed {SEED}).
It has learned nothing: it exists so that the CPU demo can show a LoRA adapter
learning the demo task on a frozen 4-bit base, with no download.

- architecture: LlamaForCausalLM, {sizes}, vocab_size={vocab_size}
- tokenizer: byte-level BPE trained on the demo data and some generic English
"""
