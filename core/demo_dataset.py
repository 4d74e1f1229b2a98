"""The shipped demo dataset `demo-antonyms`, generated deterministically.

A user asks for the opposite of a word in one of several phrasings; the assistant
answers with the antonym alone. Samples are chat `messages` (the format most users
upload). Every word of every pair is asked about in both directions.

The held-out split is built so that it can only be answered by learning the
word -> antonym mapping: each word is asked in TRAIN_TEMPLATES_PER_WORD phrasings
in training and in one *other* phrasing in the held-out split. So every held-out
prompt is an unseen (phrasing, word) combination, while both the phrasing and the
word's answer were seen in training (under other combinations).

Regenerate the committed files with:

    python -m core.demo_dataset            # writes data/demo/*.jsonl

The output is byte-identical on every run (fixed seed, sorted keys, no timestamps).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 1234
TRAIN_TEMPLATES_PER_WORD = 6

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA_DIR = REPO_ROOT / "data" / "demo"
SPLIT_FILES = {"train": "antonyms-train.jsonl", "heldout": "antonyms-heldout.jsonl"}

# The word always follows a space and is followed by punctuation or nothing: a
# byte-level BPE then sees the same token for the word in every phrasing (" hot"),
# which is what lets a tiny model transfer the mapping across phrasings.
TEMPLATES = (
    "What is the opposite of {word}?",
    "Give me the antonym of {word}.",
    "Opposite of {word}?",
    "Tell me a word that means the opposite of {word}.",
    "What word is the reverse of {word}?",
    "Antonym of {word}, please.",
    "If something is not {word}, what is it?",
    "Which word contrasts with {word}?",
)

# Each word appears in exactly one pair, so the mapping is a function both ways.
# 40 pairs (80 words asked in both directions): enough that the held-out split is
# a real test of the learned mapping, few enough that the tiny model learns it in
# about 200 optimizer steps (with 100 pairs it had not started to within 150).
PAIRS = (
    ("hot", "cold"),
    ("big", "small"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("up", "down"),
    ("open", "closed"),
    ("light", "dark"),
    ("early", "late"),
    ("high", "low"),
    ("hard", "soft"),
    ("long", "short"),
    ("wet", "dry"),
    ("rich", "poor"),
    ("old", "young"),
    ("strong", "weak"),
    ("full", "empty"),
    ("thick", "thin"),
    ("loud", "quiet"),
    ("clean", "dirty"),
    ("heavy", "weightless"),
    ("true", "false"),
    ("win", "lose"),
    ("push", "pull"),
    ("buy", "sell"),
    ("first", "last"),
    ("inside", "outside"),
    ("above", "below"),
    ("before", "after"),
    ("always", "never"),
    ("day", "night"),
    ("north", "south"),
    ("east", "west"),
    ("left", "right"),
    ("good", "bad"),
    ("friend", "enemy"),
    ("begin", "end"),
    ("accept", "reject"),
    ("arrive", "depart"),
    ("brave", "cowardly"),
    ("cheap", "expensive"),
)


def build_samples(seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """(train, heldout) samples, each {"messages": [user, assistant]}."""
    rng = random.Random(seed)
    train: list[dict] = []
    heldout: list[dict] = []
    for left, right in PAIRS:
        for word, answer in ((left, right), (right, left)):
            # A per-word permutation of the phrasings: the first ones train, the next is held out.
            order = rng.sample(range(len(TEMPLATES)), len(TEMPLATES))
            for index in order[:TRAIN_TEMPLATES_PER_WORD]:
                train.append(_sample(TEMPLATES[index], word, answer))
            heldout.append(_sample(TEMPLATES[order[TRAIN_TEMPLATES_PER_WORD]], word, answer))
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout


def _sample(template: str, word: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": template.format(word=word)},
            {"role": "assistant", "content": answer},
        ]
    }


def demo_dataset_path(split: str = "train") -> Path:
    """The shipped file of a split: 'train' or 'heldout'."""
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown demo split {split!r}; choose one of {', '.join(SPLIT_FILES)}")
    return DEMO_DATA_DIR / SPLIT_FILES[split]


def write_dataset(directory: Path = DEMO_DATA_DIR) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    train, heldout = build_samples()
    written = {}
    for split, samples in (("train", train), ("heldout", heldout)):
        path = directory / SPLIT_FILES[split]
        lines = [json.dumps(sample, sort_keys=True, ensure_ascii=False) for sample in samples]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written[split] = path
    return written


def _check_pairs() -> None:
    words = [word for pair in PAIRS for word in pair]
    duplicates = sorted({word for word in words if words.count(word) > 1})
    if duplicates:
        raise ValueError(f"words in more than one pair: {duplicates}")


_check_pairs()

if __name__ == "__main__":
    for split, path in write_dataset().items():
        print(f"{split}: {path} ({sum(1 for _ in path.open())} samples)")
