"""Chat on real weights answers the same in any order of base and adapter calls.

The playground asks the base and then an adapter in one inference worker. On a CPU
with AVX512-BF16, bitsandbytes repacked the 4-bit weights on the first answer and
its inverse, run when peft attached the adapter, left the scales transposed: from
then on every answer, base or adapter, was gibberish. Each answer here must equal
what a fresh process gives for the same model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the opposite of hot? Answer in one sentence."}]
QUANTIZATION = {"bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_type": "nf4", "use_nested_quant": False}

FRESH_PROCESS = """
import json, sys
from pathlib import Path
from worker.training.inference import generate_chat
base, adapter, messages, quantization = json.loads(sys.argv[1])
reply = generate_chat(base, adapter, messages, models_dir=Path("unused"), use_4bit=True,
                      quantization=quantization, max_tokens=24, temperature=0)
print("ANSWER=" + json.dumps(reply["content"]))
"""


def answer(base: str, adapter: str | None) -> str:
    from worker.training.inference import generate_chat

    reply = generate_chat(
        base,
        adapter,
        QUESTION,
        models_dir=Path("unused"),
        use_4bit=True,
        quantization=QUANTIZATION,
        max_tokens=24,
        temperature=0,
    )
    return reply["content"]


def fresh_process_answer(base: str, adapter: str | None) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, json.dumps([base, adapter, QUESTION, QUANTIZATION])],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    line = next(line for line in completed.stdout.splitlines() if line.startswith("ANSWER="))
    return json.loads(line.removeprefix("ANSWER="))


def save_adapter(base: str, target: Path, seed: int, modules: list[str], scale: float = 0.3) -> str:
    """A LoRA adapter with random B of std `scale` (peft starts B at zero: no change to the answers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)  # peft draws A from torch's global generator
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    wrapped = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=modules))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    wrapped.save_pretrained(target)
    AutoTokenizer.from_pretrained(base).save_pretrained(target)
    return str(target)


def test_base_and_adapters_in_any_order_answer_as_a_fresh_process(smollm2, tmp_path):
    from worker.training.inference import clear_cache

    base = str(smollm2)
    first = save_adapter(base, tmp_path / "first", seed=3, modules=["up_proj"])
    second = save_adapter(base, tmp_path / "second", seed=2, modules=["gate_proj", "down_proj"])
    checkpoint = save_adapter(
        base, tmp_path / "checkpoints" / "checkpoint-5", seed=1, modules=["q_proj", "v_proj"], scale=0.1
    )

    clear_cache()
    order = [("base", None), ("first", first), ("base", None), ("second", second), ("checkpoint", checkpoint)]
    answers = [(label, answer(base, adapter)) for label, adapter in order]
    expected = {label: fresh_process_answer(base, adapter) for label, adapter in dict(order).items()}
    clear_cache()

    print(json.dumps(answers, indent=1))
    for label, got in answers:
        assert got == expected[label], f"{label}: {got!r} != fresh process {expected[label]!r}"
    # Real language, and the adapters really are applied (their answers differ from the base's).
    assert expected["base"].startswith("The opposite of hot is")
    assert len({expected["base"], expected["first"], expected["second"], expected["checkpoint"]}) > 1
