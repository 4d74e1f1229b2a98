"""The demo model's tokenizer, built from fixed data: the same library versions give the same
tokenizer on every machine.

A byte-level BPE trained on the demo data plus some generic English: byte-level so it
encodes any text, and with the demo's words as single tokens so the antonym task is a
token -> token mapping that a tiny model learns in a minute or two (a character-level
tokenizer would make every answer several tokens long: more to learn, longer sequences;
not tried). The worker saves it with the demo model (worker/training/demo_model.py); the
server builds it in memory to measure the demo's token lengths without loading torch.
"""

from __future__ import annotations

from typing import Any

from core.demo_dataset import PAIRS, TEMPLATES
from core.model_catalog import DEMO_ARCHITECTURE, DEMO_TOKENIZER_VOCAB_SIZE

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}

GENERIC_TEXT = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Please answer the question. What is the meaning of this word? Give me an example, please.
Language models read text as tokens and predict the next token from the ones before it.
The weather today is mild, with a chance of rain in the evening and clear skies tomorrow.
She opened the window, looked at the garden and wrote a short letter to her brother.
Numbers such as 1, 2, 3, 10, 42 and 2024 appear in text; so do symbols like #, @, %, & and *.
You are a helpful assistant. Answer with one word. Thank you! Sure, here is the answer.
"""


def build_demo_tokenizer() -> Any:
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
    lines = GENERIC_TEXT.splitlines()
    # The Llama-2 chat markers, so they become few tokens.
    lines += ["[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n[/INST]"] * 20
    for left, right in PAIRS:
        for word, answer in ((left, right), (right, left)):
            for template in TEMPLATES:
                lines.append(f"[INST] {template.format(word=word)} [/INST] {answer}")
    return lines
