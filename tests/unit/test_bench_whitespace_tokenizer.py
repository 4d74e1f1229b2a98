"""bench/measure_memory.save_whitespace_tokenizer: the measuring scripts' text reads as the ids it names.

measure_eta.py writes its data as text ("t17 t4021 ..."); on a model dir that
run_bench.py made (whose tokenizer takes pre-tokenized data) a whole line was one unknown
word, so an ETA run trained on two-token samples. It now saves this tokenizer first.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from measure_memory import save_whitespace_tokenizer  # noqa: E402
from run_bench import make_tokenizer  # noqa: E402


def test_text_reads_as_the_ids_it_names(tmp_path) -> None:
    from transformers import AutoTokenizer, LlamaConfig

    LlamaConfig(vocab_size=500).save_pretrained(tmp_path)
    make_tokenizer(500).save_pretrained(tmp_path)  # run_bench's, as its model dirs have it
    assert len(AutoTokenizer.from_pretrained(tmp_path)("t17 t40 t499")["input_ids"]) < 3

    save_whitespace_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer("t17 t40 t499", add_special_tokens=False)["input_ids"] == [17, 40, 499]
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
