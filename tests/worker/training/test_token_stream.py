"""Streamed generation on the demo model (real 4-bit bitsandbytes on the CPU): the pieces arrive
while generate() runs, join to exactly the non-streamed answer, and carry true logprobs."""

from __future__ import annotations

import math
import time

from core.run_config import DEMO_MODEL_ID

QUANTIZATION = {"bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_type": "nf4"}
QUESTION = [{"role": "user", "content": "What is the opposite of hot?"}]


def answer(models_dir, **options):  # type: ignore[no-untyped-def]
    from worker.training.inference import generate_chat

    return generate_chat(
        DEMO_MODEL_ID,
        None,
        QUESTION,
        models_dir=models_dir,
        use_4bit=True,
        quantization=QUANTIZATION,
        max_tokens=24,
        temperature=0,
        **options,
    )


def test_pieces_arrive_during_generation_and_join_to_the_answer(models_dir) -> None:
    arrivals: list[tuple[float, str]] = []
    streamed = answer(models_dir, on_piece=lambda piece: arrivals.append((time.monotonic(), piece["text"])))
    finished = time.monotonic()
    plain = answer(models_dir)
    assert streamed["content"] == plain["content"] == "".join(text for _, text in arrivals)
    assert len(arrivals) > 1, "the answer came in one piece: nothing was streamed"
    assert arrivals[0][0] < finished - 0.001, "the first piece came only when generation ended"


def test_stop_strings_never_leak_into_the_stream(models_dir) -> None:
    plain = answer(models_dir)
    marker = plain["content"][3:6]
    assert marker.strip(), plain
    pieces: list[str] = []
    stopped = answer(models_dir, stop=[marker], on_piece=lambda piece: pieces.append(piece["text"]))
    assert marker not in "".join(pieces) and "".join(pieces) == stopped["content"]
    assert stopped["finish_reason"] == "stop" and plain["content"].startswith(stopped["content"])


def test_logprobs_are_the_models_and_greedy_picks_the_top_one(models_dir) -> None:
    reply = answer(models_dir, logprobs=True, top_logprobs=3)
    entries = reply["logprobs"]
    assert 0 < len(entries) <= reply["completion_tokens"]
    for entry in entries:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 3
        best = entry["top_logprobs"][0]
        assert math.isclose(best["logprob"], entry["logprob"], rel_tol=1e-5)  # greedy: the argmax
    # A token may hold half a character (its text shows "\ufffd"); its bytes are exact.
    joined = b"".join(bytes(entry["bytes"]) for entry in entries)
    assert joined.decode(errors="replace").strip() == reply["content"]
