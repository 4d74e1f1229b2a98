"""The official `openai` client drives Loraboard end to end, through real workers.

upload -> job -> events -> checkpoints -> chat completion -> adapter download,
and the downloaded adapter loads with peft onto the base model. Once on the
embedded defaults (SQLite database + SQLite broker), once on PostgreSQL + Redis.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import httpx
import openai
import pytest
import redis

from tests.paths import DEMO_DATA
from tests.stack import ADMIN_KEY, Stack

DEMO_TRAIN = DEMO_DATA / "antonyms-train.jsonl"
DEMO_HELDOUT = DEMO_DATA / "antonyms-heldout.jsonl"
FINAL = {"succeeded", "failed", "cancelled"}


def client_for(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=300)


def wait_for(client: openai.OpenAI, job_id: str, stack: Stack, statuses: set[str], timeout: float = 420):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(1)
    raise AssertionError(
        f"job {job_id} stuck in {job.status}\n--- worker log ---\n{stack.log('worker-training')}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres-redis"])
def test_openai_client_drives_a_run_end_to_end(stack_factory, backend: str, tmp_path: Path) -> None:
    stack = stack_factory(backend)
    client = client_for(stack)
    listener = None
    if backend == "postgres-redis":
        # Live metrics also go out on Redis pub/sub when LORABOARD_REDIS_URL is set.
        listener = redis.Redis.from_url(stack.env["LORABOARD_REDIS_URL"]).pubsub()

    training = client.files.create(file=DEMO_TRAIN.open("rb"), purpose="fine-tune")
    validation = client.files.create(file=DEMO_HELDOUT.open("rb"), purpose="fine-tune")
    assert training.status == "processed" and training.filename == "antonyms-train.jsonl"
    assert client.files.retrieve(training.id).bytes == DEMO_TRAIN.stat().st_size

    job = client.fine_tuning.jobs.create(
        model="demo-tiny-llama",
        training_file=training.id,
        validation_file=validation.id,
        suffix="antonyms",
        seed=7,
        metadata={"test": backend},
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "max_steps": 24,
                    "save_steps": 8,
                    "save_total_limit": 2,
                    "logging_steps": 4,
                    "eval_steps": 12,
                    "batch_size": 8,
                }
            },
        },
    )
    assert job.status == "queued" and job.model == "demo-tiny-llama" and job.seed == 7
    if listener is not None:
        listener.subscribe(f"loraboard:runs:{job.id}")

    job = wait_for(client, job.id, stack, FINAL)
    assert job.status == "succeeded", (job.error, stack.log("worker-training"))
    assert job.fine_tuned_model == f"ft:demo-tiny-llama:antonyms:{job.id}"
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.result_files and client.files.content(job.result_files[0]).text.startswith("step,epoch,loss")

    # Events: newest first, messages and metrics with step, loss, lr, grad norm, in step order.
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert events[0].message == "The job has successfully completed"
    # The event log names the run's files, never where the server keeps them (issue 16, item 11).
    messages = [event.message for event in events]
    assert f"adapter saved: <data dir>/artifacts/{job.id}/adapter" in messages
    assert not [message for message in messages if str(stack.data_dir.resolve()) in message]
    raw_job = httpx.get(f"{stack.base_url}/v1/fine_tuning/jobs/{job.id}", headers=stack.headers, timeout=30)
    runtime = raw_job.json()["loraboard"]["runtime"]
    assert runtime["sft_config"]["output_dir"].startswith("<data dir>/")
    assert str(stack.data_dir.resolve()) not in raw_job.text
    metrics = [event.data for event in reversed(events) if event.type == "metrics"]
    train_rows = [data for data in metrics if "train_loss" in data]
    assert [row["step"] for row in train_rows] == [4, 8, 12, 16, 20, 24]
    assert all({"learning_rate", "grad_norm", "epoch"} <= row.keys() for row in train_rows)
    assert any("valid_loss" in data for data in metrics)
    page = client.fine_tuning.jobs.list_events(job.id, limit=3)
    older = client.fine_tuning.jobs.list_events(job.id, limit=3, after=page.data[-1].id)
    assert page.has_more and older.data[0].id != page.data[0].id

    # Checkpoints: save_steps 8 over 24 steps with save_total_limit 2 keeps steps 24 and 16.
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [checkpoint.step_number for checkpoint in checkpoints] == [24, 16]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-24"
    assert checkpoints[0].metrics.step == 24

    # Chat with the adapter and with a checkpoint, served by the inference worker.
    question = json.loads(DEMO_HELDOUT.read_text().splitlines()[0])["messages"][:-1]
    completion = client.chat.completions.create(
        model=job.fine_tuned_model, messages=question, temperature=0, max_tokens=8
    )
    assert completion.object == "chat.completion" and completion.choices[0].message.role == "assistant"
    assert isinstance(completion.choices[0].message.content, str)
    assert completion.usage.completion_tokens <= 8 and completion.usage.prompt_tokens > 0
    from_checkpoint = client.chat.completions.create(
        model=checkpoints[1].fine_tuned_model_checkpoint, messages=question, temperature=0, max_tokens=8
    )
    assert from_checkpoint.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=f"ft:demo-tiny-llama:x:{job.id}:ckpt-step-8", messages=question)

    # The adapter zip loads with peft onto the 4-bit base model.
    download = httpx.get(
        f"{stack.base_url}/v1/fine_tuning/jobs/{job.id}/adapter", timeout=60, headers=stack.headers
    )
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    adapter_dir = tmp_path / "adapter"
    zipfile.ZipFile(io.BytesIO(download.content)).extractall(adapter_dir)
    root = adapter_dir / f"{job.id}-adapter"
    assert {"adapter_model.safetensors", "adapter_config.json", "run_config.json", "metrics.jsonl"} <= {
        path.name for path in root.iterdir()
    }
    assert_adapter_loads(root, stack.data_dir / "models", question)
    checkpoint_zip = httpx.get(
        f"{stack.base_url}/v1/fine_tuning/jobs/{job.id}/checkpoints/{checkpoints[1].id}/download",
        timeout=60,
        headers=stack.headers,
    )
    names = zipfile.ZipFile(io.BytesIO(checkpoint_zip.content)).namelist()
    assert any(name.endswith("adapter_model.safetensors") for name in names)
    assert not any(name.endswith("optimizer.pt") for name in names)

    if listener is not None:
        published = []
        while (message := listener.get_message(timeout=1)) is not None:
            if message["type"] == "message":
                published.append(json.loads(message["data"]))
        assert [item["step"] for item in published if item["type"] == "metrics" and "train_loss" in item][
            :2
        ] == [4, 8]

    listed = client.fine_tuning.jobs.list(metadata={"test": backend})
    assert [item.id for item in listed.data] == [job.id]
    assert job.fine_tuned_model in [model.id for model in client.models.list().data]


def assert_adapter_loads(adapter: Path, models_dir: Path, messages: list[dict]) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from worker.training.data import render_chat_prompt

    base_dir = models_dir / "demo-tiny-llama"
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    base = AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=quantization, device_map={"": "cpu"}
    )
    model = PeftModel.from_pretrained(base, adapter)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    inputs = tokenizer(render_chat_prompt(messages, tokenizer), return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]
    assert any("lora_A" in name for name, _ in model.named_parameters())


@pytest.mark.slow
def test_cancel_running_job_keeps_its_checkpoints(stack_factory) -> None:
    stack = stack_factory("sqlite", workers=("training",))
    client = client_for(stack)
    job = client.fine_tuning.jobs.create(
        model="demo-tiny-llama",
        training_file="demo-antonyms",
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"max_steps": 2000, "save_steps": 3, "logging_steps": 1, "batch_size": 4}
            },
        },
    )
    deadline = time.monotonic() + 240
    while not client.fine_tuning.jobs.checkpoints.list(job.id).data:
        assert time.monotonic() < deadline, stack.log("worker-training")
        time.sleep(1)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    # Loraboard's "cancelling" is OpenAI's "running" until the worker stops at its next step.
    assert cancelled.status in ("running", "cancelled")
    assert cancelled.loraboard["status"] in ("cancelling", "cancelled")
    job = wait_for(client, job.id, stack, FINAL, timeout=120)
    assert job.status == "cancelled" and job.fine_tuned_model is None
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data
    messages = [event.message for event in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any(message.startswith("Job cancelled at step") for message in messages)


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_run_resumes(stack_factory) -> None:
    stack = stack_factory("sqlite", workers=("training",))
    client = client_for(stack)
    job = client.fine_tuning.jobs.create(
        model="demo-tiny-llama",
        training_file="demo-antonyms",
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"max_steps": 40, "save_steps": 5, "logging_steps": 1, "batch_size": 4}
            },
        },
    )
    deadline = time.monotonic() + 240
    while not any(c.step_number >= 10 for c in client.fine_tuning.jobs.checkpoints.list(job.id).data):
        assert time.monotonic() < deadline, stack.log("worker-training")
        time.sleep(0.5)
    stack.kill("worker-training")  # SIGKILL: no clean-up, like a machine losing power
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    stack.start_worker("training")  # the same worker name comes back and reclaims its run
    job = wait_for(client, job.id, stack, FINAL, timeout=300)
    assert job.status == "succeeded", (job.error, stack.log("worker-training"))
    events = [event.message for event in client.fine_tuning.jobs.list_events(job.id, limit=500)]
    assert any("re-queued to resume" in message for message in events)
    assert any(message.startswith("Resuming from the checkpoint at step") for message in events)
    steps = [
        event.data["step"]
        for event in reversed(client.fine_tuning.jobs.list_events(job.id, limit=500).data)
        if event.type == "metrics" and "train_loss" in event.data
    ]
    assert steps == sorted(steps) and steps[-1] == 40 and len(steps) == len(set(steps))


@pytest.mark.slow
def test_pause_saves_a_checkpoint_and_resume_finishes_the_run(stack_factory) -> None:
    stack = stack_factory("sqlite", workers=("training",))
    client = client_for(stack)
    # Steps enough that the pause lands before the end: the worker reads it within a
    # second, and the demo model trains tens of steps a second on a quiet machine.
    job = client.fine_tuning.jobs.create(
        model="demo-tiny-llama",
        training_file="demo-antonyms",
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"max_steps": 150, "logging_steps": 1, "batch_size": 4}},
        },
    )
    deadline = time.monotonic() + 240
    while client.fine_tuning.jobs.retrieve(job.id).loraboard["current_step"] < 5:
        assert time.monotonic() < deadline, stack.log("worker-training")
        time.sleep(0.5)
    pausing = client.fine_tuning.jobs.pause(job.id)
    assert pausing.status == "running" and pausing.loraboard["status"] == "pausing"
    # OpenAI has no "paused": a paused job reports "cancelled" (stopped, resumable);
    # Loraboard's own state says paused.
    paused = wait_for(client, job.id, stack, FINAL, timeout=120)
    assert paused.status == "cancelled" and paused.loraboard["status"] == "paused"
    (checkpoint,) = client.fine_tuning.jobs.checkpoints.list(
        job.id
    ).data  # save_steps is 0: the pause saved it
    assert 5 <= checkpoint.step_number < 150
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)

    client.fine_tuning.jobs.resume(job.id)
    job = wait_for(client, job.id, stack, FINAL, timeout=240)
    assert job.status == "succeeded", (job.error, stack.log("worker-training"))
    steps = [
        event.data["step"]
        for event in reversed(client.fine_tuning.jobs.list_events(job.id, limit=500).data)
        if event.type == "metrics" and "train_loss" in event.data
    ]
    assert steps == list(range(1, 151))
