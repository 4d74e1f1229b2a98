"""A full flow through real workers, every body checked against OpenAI's own schemas.

upload -> job (validating_files, running, succeeded) -> events -> checkpoints (one per epoch
by default, the newest three kept, with OpenAI's metric names) -> chat with the adapter and
with a checkpoint -> error cases. The official client reads the same answers.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.openai_spec import assert_conforms
from tests.paths import DEMO_DATA
from tests.stack import ADMIN_HEADERS, ADMIN_KEY

DATA = DEMO_DATA
FINAL = {"succeeded", "failed", "cancelled"}


@pytest.mark.slow
def test_every_body_of_a_trained_job_follows_openais_spec(stack_factory) -> None:
    stack = stack_factory("sqlite")
    api = httpx.Client(base_url=f"{stack.base_url}/v1", headers=ADMIN_HEADERS, timeout=300)
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=300)

    def get(path: str, schema: str, **params: object) -> dict:
        response = api.get(path, params=params)
        assert response.status_code == 200, response.text
        assert_conforms(schema, response.json())
        return response.json()

    with (DATA / "antonyms-train.jsonl").open("rb") as handle:
        upload = api.post("/files", files={"file": handle}, data={"purpose": "fine-tune"})
    assert_conforms("OpenAIFile", upload.json())
    with (DATA / "antonyms-heldout.jsonl").open("rb") as handle:
        validation = api.post("/files", files={"file": handle}, data={"purpose": "fine-tune"}).json()
    get("/files", "ListFilesResponse")

    # Four epochs of 15 steps (480 samples, batch 32): checkpoints at 15, 30, 45, 60; 30-60 kept.
    created = api.post(
        "/fine_tuning/jobs",
        json={
            "model": "demo-tiny-llama",
            "training_file": upload.json()["id"],
            "validation_file": validation["id"],
            "suffix": "spec",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4}}},
        },
    )
    assert_conforms("FineTuningJob", created.json())
    job_id = created.json()["id"]
    seen_statuses = set()
    deadline = time.monotonic() + 420
    while (job := get(f"/fine_tuning/jobs/{job_id}", "FineTuningJob"))["status"] not in FINAL:
        seen_statuses.add(job["status"])
        if job["status"] == "running" and job["loraboard"]["current_step"]:
            assert job["estimated_finish"] is not None and job["trained_tokens"]
        assert time.monotonic() < deadline, stack.log("worker-training")
        time.sleep(0.2)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker-training"))
    assert "running" in seen_statuses
    assert job["hyperparameters"] == {"n_epochs": 4, "batch_size": 32, "learning_rate_multiplier": 1.0}

    events = get(f"/fine_tuning/jobs/{job_id}/events", "ListFineTuningJobEventsResponse", limit=1000)
    messages = [event["message"] for event in events["data"]]
    assert any("validating the training files" in message for message in messages)
    assert "Files validated; training started" in messages
    metrics = [event["data"] for event in events["data"] if event["type"] == "metrics"]
    assert any({"step", "train_loss", "train_mean_token_accuracy"} <= data.keys() for data in metrics)
    assert any({"valid_loss", "valid_mean_token_accuracy"} <= data.keys() for data in metrics)

    checkpoints = get(f"/fine_tuning/jobs/{job_id}/checkpoints", "ListFineTuningJobCheckpointsResponse")
    assert [item["step_number"] for item in checkpoints["data"]] == [60, 45, 30]
    for item in checkpoints["data"]:
        assert {"train_loss", "valid_loss", "train_mean_token_accuracy"} <= item["metrics"].keys()
        assert 0 <= item["metrics"]["train_mean_token_accuracy"] <= 1

    question = [{"role": "user", "content": "What is the opposite of hot?"}]
    for model in (job["fine_tuned_model"], checkpoints["data"][-1]["fine_tuned_model_checkpoint"]):
        answer = api.post("/chat/completions", json={"model": model, "messages": question, "max_tokens": 8})
        assert answer.status_code == 200, answer.text
        assert_conforms("CreateChatCompletionResponse", answer.json())
    get("/models", "ListModelsResponse")
    result = get(f"/files/{job['result_files'][0]}", "OpenAIFile")
    assert result["purpose"] == "fine-tune-results"

    # Error cases: OpenAI's error body, the public field named.
    for response, param in (
        (api.get("/fine_tuning/jobs/ftjob-nope"), "fine_tuning_job_id"),
        (api.post("/fine_tuning/jobs/" + job_id + "/cancel"), "fine_tuning_job_id"),
        (api.post("/chat/completions", json={"model": "ft:x:y:ftjob-00", "messages": question}), "model"),
        (api.post("/fine_tuning/jobs", json={"model": "demo-tiny-llama", "training_file": "file-x"}), None),
    ):
        assert response.status_code in (400, 404), response.text
        assert_conforms("ErrorResponse", response.json())
        if param:
            assert response.json()["error"]["param"] == param
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(
            model="demo-tiny-llama",
            training_file="demo-antonyms",
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        )
    assert refused.value.body["param"] == "method.type"
    assert client.fine_tuning.jobs.retrieve(job_id).hyperparameters.n_epochs == 4
