"""The benchmark's workload (docs/workload.md): the model, its tokenizer and the samples.

A Llama-2-7B-shaped model with random float16 weights, made on the GPU and saved with
save_pretrained (the device has no hub access); 1,000 samples whose lengths are drawn
from a seeded lognormal. Both benchmarks use it: `throughput` feeds the samples as
pre-tokenized ids, `whole-run` writes them as text for the worker's own data pipeline,
with a whitespace tokenizer under which a sample's text is exactly its length in tokens.

    python -m bench.workload DIR [--tiny]    # build the model into DIR (a child process of
                                             # the whole-run harness, which keeps no GPU memory)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

N_SAMPLES = 1000
MAX_LEN = 1024
VOCAB = 32000
TINY_MAX_LEN = 64  # --tiny: the same length draws, capped, so a CPU step takes well under a second
TINY_VOCAB = 512
FIRST_TOKEN_ID = 3  # 0 <unk>, 1 <s>, 2 </s> (also the pad token, as in the classic recipe)

# Llama-2 shapes: hidden size, MLP size, layers (heads = hidden / 128, as in Llama-2).
LLAMA2_SHAPES = {"7b": (4096, 11008, 32), "13b": (5120, 13824, 40)}


def sample_lengths(n: int = N_SAMPLES, max_len: int = MAX_LEN) -> list[int]:
    """max(32, min(max_len, int(lognormvariate(log 300, 0.8)))) from Random(0), in order."""
    rng = random.Random(0)
    return [max(32, min(max_len, int(rng.lognormvariate(math.log(300), 0.8)))) for _ in range(n)]


def make_samples(lengths: list[int], vocab: int) -> list[list[int]]:
    """Random token ids, from their own generator so that the lengths stay those of Random(0)."""
    rng = random.Random(1)
    return [[rng.randrange(FIRST_TOKEN_ID, vocab) for _ in range(n)] for n in lengths]


def sample_text(ids: list[int]) -> str:
    """A sample as the whitespace tokenizer's text, one word per id. trl appends the EOS token
    to a text sample, so the text of a sample of length n holds its first n - 1 ids."""
    return " ".join(f"t{token}" for token in ids[:-1])


def write_text_dataset(path: Path, lengths: list[int], vocab: int) -> int:
    """The samples as a JSONL file in Loraboard's "text" format; returns the real tokens in all
    (what the training counts, with the EOS that trl adds to each)."""
    with path.open("w") as out:
        for ids in make_samples(lengths, vocab):
            out.write(json.dumps({"text": sample_text(ids)}) + "\n")
    return sum(lengths)


def recipe(trainer: str, max_steps: int, max_len: int) -> dict[str, Any]:
    """The recipe in RunConfig's names (core/run_config.py): the whole run sends it as a job's
    hyperparameters, the throughput bench builds its RunConfig from it."""
    return {
        "trainer": trainer,
        "dataset_format": "text",
        "use_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "use_nested_quant": False,
        "bnb_4bit_compute_dtype": "float16",
        "lora_r": 64,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "gradient_checkpointing": True,
        "max_grad_norm": 0.3,
        "learning_rate": 2e-4,
        "weight_decay": 0.001,
        "optim": "paged_adamw_32bit",
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.03,
        "group_by_length": True,
        "packing": False,
        "max_seq_length": max_len,
        "num_train_epochs": 1,
        "max_steps": max_steps,
        "fp16": False,
        "bf16": False,
        # the recipe saves no checkpoint (save_steps 0); the API would keep one per epoch
        "save_steps": 0,
        "save_every_epoch": False,
        "logging_steps": 25,
        "device_map": {"": 0},
    }


def model_config(tiny: bool, shape: str = "7b") -> Any:
    from transformers import LlamaConfig

    if tiny:
        hidden, intermediate, layers, heads, vocab, positions = 128, 256, 2, 4, TINY_VOCAB, MAX_LEN
    else:
        hidden, intermediate, layers = LLAMA2_SHAPES[shape]
        heads, vocab, positions = hidden // 128, VOCAB, 4096
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        rms_norm_eps=1e-5,
        max_position_embeddings=positions,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


def _word_level_tokenizer(vocab: int, whitespace: bool) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"t{i}": i for i in range(FIRST_TOKEN_ID, vocab)}
    backend = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    if whitespace:
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )


def make_tokenizer(vocab: int) -> Any:
    """For pre-tokenized data (throughput): the trainer only needs its pad/eos tokens."""
    return _word_level_tokenizer(vocab, whitespace=False)


def make_text_tokenizer(vocab: int) -> Any:
    """Reads "t17 t4021 ..." as the ids 17, 4021, ...; </s> is a special token, so the EOS
    that trl appends to a text ("t9</s>") splits off as one token."""
    return _word_level_tokenizer(vocab, whitespace=True)


def save_whitespace_tokenizer(model_dir: Path) -> None:
    """Give a saved model dir the text tokenizer for its vocabulary."""
    from transformers import AutoConfig

    make_text_tokenizer(AutoConfig.from_pretrained(model_dir).vocab_size).save_pretrained(model_dir)


def build_model_dir(path: Path, tiny: bool, shape: str = "7b", *, text_tokenizer: bool = False) -> None:
    """Random weights made on the device in float16 and saved like a downloaded checkpoint."""
    import torch
    from transformers import LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = model_config(tiny, shape)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=torch.float16)
    model.save_pretrained(path)
    tokenizer = make_text_tokenizer if text_tokenizer else make_tokenizer
    tokenizer(cfg.vocab_size).save_pretrained(path)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    print(f"# model built and saved to {path} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the workload's model (with the text tokenizer).")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--shape", choices=sorted(LLAMA2_SHAPES), default="7b")
    args = parser.parse_args(argv)
    build_model_dir(args.model_dir, args.tiny, args.shape, text_tokenizer=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
