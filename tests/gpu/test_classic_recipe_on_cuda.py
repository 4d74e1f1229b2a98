"""On a CUDA machine: the classic QLoRA recipe, unchanged, through a real worker.

A random-weight Llama (no hub on GPU test machines) in float16, the classic
defaults (nf4, float16 compute, paged_adamw_32bit, gradient checkpointing,
group_by_length, device_map {"": 0}), once with the reference trainer and once
with Loraboard's default trainer. Run with `make gpu-test` (DEVELOPERS.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.paths import DEMO_DATA
from tests.stack import Stack
from tests.tiny_llama import tiny_llama_config

pytestmark = pytest.mark.gpu
DEMO_TRAIN = DEMO_DATA / "antonyms-train.jsonl"
MAX_STEPS, LOGGING_STEPS = 30, 5


def build_random_llama(directory: Path, models_dir: Path) -> Path:
    """The tests' tiny Llama grown to 8 layers of hidden size 1024, with the demo model's
    tokenizer, in float16."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from worker.training.demo_model import ensure_demo_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_demo_model(models_dir))
    torch.manual_seed(0)
    config = tiny_llama_config(
        vocab_size=len(tokenizer),
        hidden_size=1024,
        intermediate_size=2752,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).to(dtype=torch.float16, device="cuda")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_text_dataset(path: Path) -> Path:
    """guanaco-llama2-1k's shape: one already-templated `text` column."""
    with path.open("w") as out:
        for line in DEMO_TRAIN.read_text().splitlines()[:400]:
            user, assistant = json.loads(line)["messages"][-2:]
            text = f"<s>[INST] {user['content']} [/INST] {assistant['content']} </s>"
            out.write(json.dumps({"text": text}) + "\n")
    return path


def run_job(stack: Stack, model_dir: Path, file_id: str, trainer: str) -> dict:
    job = httpx.post(
        headers=stack.headers,
        url=f"{stack.base_url}/v1/fine_tuning/jobs",
        timeout=30,
        json={
            "model": str(model_dir),
            "training_file": file_id,
            "method": {
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {
                        "max_steps": MAX_STEPS,
                        "logging_steps": LOGGING_STEPS,
                        "save_steps": 15,
                        "trainer": trainer,
                    }
                },
            },
        },
    ).json()
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        job = httpx.get(
            headers=stack.headers, url=f"{stack.base_url}/v1/fine_tuning/jobs/{job['id']}", timeout=30
        ).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(2)
    raise AssertionError(stack.log("worker-training"))


def test_classic_recipe_trains_through_a_real_worker_on_cuda(stack_factory, tmp_path: Path) -> None:
    stack = stack_factory("sqlite", workers=("training",))
    # Under <data dir>/local: the server accepts local model paths only under its allowed roots.
    model_dir = build_random_llama(stack.data_dir / "local" / "random-llama", stack.data_dir / "models")
    dataset = write_text_dataset(tmp_path / "guanaco-style.jsonl")
    upload = httpx.post(
        headers=stack.headers,
        url=f"{stack.base_url}/v1/files",
        data={"purpose": "fine-tune"},
        timeout=60,
        files={"file": (dataset.name, dataset.read_bytes())},
    ).json()
    assert upload["loraboard"]["format"] == "text"

    for trainer in ("reference", "loraboard"):
        job = run_job(stack, model_dir, upload["id"], trainer)
        assert job["status"] == "succeeded", (job["error"], stack.log("worker-training"))
        runtime = job["loraboard"]["runtime"]
        assert "cuda" in json.dumps(runtime).lower()
        config = job["loraboard"]["config"]
        assert (config["optim"], config["bnb_4bit_compute_dtype"], config["gradient_checkpointing"]) == (
            "paged_adamw_32bit",
            "float16",
            True,
        )
        events = httpx.get(
            headers=stack.headers,
            url=f"{stack.base_url}/v1/fine_tuning/jobs/{job['id']}/events",
            params={"limit": 200},
            timeout=30,
        ).json()["data"]
        metrics = [
            event["data"] for event in events if event["type"] == "metrics" and "train_loss" in event["data"]
        ]
        assert len(metrics) == MAX_STEPS // LOGGING_STEPS  # a row at every logging step
        assert all(row["gpu_memory_allocated_mb"] > 0 and row["tokens_per_second"] > 0 for row in metrics)
        checkpoints = httpx.get(
            headers=stack.headers,
            url=f"{stack.base_url}/v1/fine_tuning/jobs/{job['id']}/checkpoints",
            timeout=30,
        ).json()["data"]
        assert [checkpoint["step_number"] for checkpoint in checkpoints] == [30, 15]
