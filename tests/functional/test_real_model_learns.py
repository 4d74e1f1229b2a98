"""Proven on real weights: the built-in SmolLM2-135M-Instruct, fine-tuned through a real worker.

The openai client uploads the shipped antonym chats and fine-tunes the real model
(the quick-start preset, cut to 12 steps) on the CPU with 4-bit QLoRA. Then, through
the chat API and one inference worker, base and adapter calls alternate on unseen
questions: the base answers in whole sentences ("The opposite of hot is cool."),
the adapter with the bare word, as it was taught; a question from outside the task
still gets a sensible answer, and a checkpoint answers too.
"""

from __future__ import annotations

import json
import time

import pytest

from core.run_config import SMOLLM2_ID
from tests.functional.test_openai_flow import DEMO_HELDOUT, DEMO_TRAIN, client_for, wait_for

pytestmark = pytest.mark.slow

HELDOUT_QUESTIONS = 16


def ask(client, model: str, question: str, max_tokens: int = 12) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=max_tokens
    )
    return reply.choices[0].message.content or ""


def test_real_model_learns_the_task_and_keeps_its_language(stack_factory, smollm2):
    stack = stack_factory("sqlite")
    client = client_for(stack)
    training = client.files.create(file=DEMO_TRAIN.open("rb"), purpose="fine-tune")
    started = time.monotonic()
    job = client.fine_tuning.jobs.create(
        model=SMOLLM2_ID,
        training_file=training.id,
        suffix="antonyms",
        method={"type": "supervised", "supervised": {"hyperparameters": {"max_steps": 12, "save_steps": 6}}},
    )
    job = wait_for(client, job.id, stack, {"succeeded", "failed", "cancelled"}, timeout=900)
    assert job.status == "succeeded", stack.log("worker-training")
    print(f"fine-tune of {SMOLLM2_ID}: {time.monotonic() - started:.0f} s, {job.trained_tokens} tokens")
    adapter = job.fine_tuned_model
    assert adapter and adapter.startswith(f"ft:{SMOLLM2_ID}:antonyms:")

    heldout = [json.loads(line)["messages"] for line in DEMO_HELDOUT.read_text().splitlines()]
    adapter_right = base_right = 0
    for messages in heldout[:HELDOUT_QUESTIONS]:
        question, expected = messages[0]["content"], messages[1]["content"]
        # Base and adapter alternate in the one inference worker, as in the playground.
        base_answer = ask(client, SMOLLM2_ID, question)
        adapter_answer = ask(client, adapter, question)
        print(f"{question!r}: base {base_answer!r}, adapter {adapter_answer!r} (expected {expected!r})")
        base_right += base_answer.strip().lower() == expected
        adapter_right += adapter_answer.strip().lower() == expected
    assert adapter_right >= 0.75 * HELDOUT_QUESTIONS, (adapter_right, base_right)
    assert base_right <= 0.1 * HELDOUT_QUESTIONS, (adapter_right, base_right)

    # Outside the task, the fine-tuned model still knows things and says them in English.
    capital = ask(client, adapter, "What is the capital of France?", max_tokens=24)
    assert "paris" in capital.lower(), capital

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert sorted(checkpoint.step_number for checkpoint in checkpoints) == [6, 12]
    middle = next(checkpoint for checkpoint in checkpoints if checkpoint.step_number == 6)
    assert ask(client, middle.fine_tuned_model_checkpoint, "What is the opposite of up?").strip()
