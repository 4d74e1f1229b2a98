"""OpenAI request -> RunConfig mapping, and the API's OpenAI-shaped errors (in process, real SQLite)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.errors import APIError
from app.services.job_requests import JobCreate, run_config_from_request
from core.run_config import DEMO_OVERRIDES


def request(**hyperparameters) -> JobCreate:
    return JobCreate(
        model="demo-tiny-llama",
        training_file="demo-antonyms",
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    )


def test_openai_names_map_onto_classic_names() -> None:
    config = run_config_from_request(
        request(n_epochs=3, batch_size=2, learning_rate_multiplier=0.5, lora_r=8)
    )
    assert config.num_train_epochs == 3
    assert config.per_device_train_batch_size == 2
    # The multiplier scales the learning rate "auto" picks for the model: the demo preset's 1e-3.
    assert config.learning_rate == pytest.approx(0.5 * DEMO_OVERRIDES["learning_rate"])
    assert config.lora_r == 8
    classic = JobCreate(
        model="NousResearch/Llama-2-7b-chat-hf",
        training_file="x/y",
        method={"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": 0.5}}},
    )
    assert run_config_from_request(classic).learning_rate == pytest.approx(1e-4)


def test_auto_keeps_the_preset() -> None:
    config = run_config_from_request(
        request(n_epochs="auto", batch_size="auto", learning_rate_multiplier="auto")
    )
    assert config.num_train_epochs == DEMO_OVERRIDES["num_train_epochs"]
    assert config.learning_rate == DEMO_OVERRIDES["learning_rate"]


def test_other_models_start_from_the_classic_recipe() -> None:
    config = run_config_from_request(JobCreate(model="NousResearch/Llama-2-7b-chat-hf", training_file="x/y"))
    assert config.lora_r == 64 and config.optim == "paged_adamw_32bit"


def test_deprecated_top_level_hyperparameters_still_work() -> None:
    job = JobCreate(model="demo-tiny-llama", training_file="demo-antonyms", hyperparameters={"n_epochs": 2})
    assert run_config_from_request(job).num_train_epochs == 2


@pytest.mark.parametrize(
    ("hyperparameters", "param"),
    [
        ({"lora_r": -1}, "lora_r"),
        ({"n_epochs": 2, "num_train_epochs": 3}, "n_epochs"),
        ({"learning_rate_multiplier": 2, "learning_rate": 1e-4}, "learning_rate_multiplier"),
        ({"learning_rate_multiplier": -1}, "learning_rate_multiplier"),
        ({"preset": "turbo"}, "preset"),
        ({"model_name": "x"}, "model_name"),
    ],
)
def test_bad_hyperparameters_are_refused_with_their_name(hyperparameters: dict, param: str) -> None:
    with pytest.raises(APIError) as caught:
        run_config_from_request(request(**hyperparameters))
    assert caught.value.status_code == 400
    assert caught.value.param == param


def test_errors_have_openai_shape(client: TestClient) -> None:
    response = client.get("/v1/fine_tuning/jobs/ftjob-doesnotexist")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "No job found with id 'ftjob-doesnotexist'.",
            "type": "invalid_request_error",
            "param": "fine_tuning_job_id",
            "code": "job_not_found",
        }
    }
    response = client.post("/v1/fine_tuning/jobs", json={"training_file": "demo-antonyms"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_unknown_file_is_refused_before_queueing(client: TestClient) -> None:
    # Compared by id: a running job that another module seeded reports a new ETA on each read.
    before = [job["id"] for job in client.get("/v1/fine_tuning/jobs").json()["data"]]
    response = client.post(
        "/v1/fine_tuning/jobs", json={"model": "demo-tiny-llama", "training_file": "file-nope"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "training_file"
    assert [job["id"] for job in client.get("/v1/fine_tuning/jobs").json()["data"]] == before  # none queued


def test_malformed_upload_is_refused_with_line_numbers(client: TestClient) -> None:
    bad = b'{"text": "fine"}\n{"text": 5}\nnot json\n'
    response = client.post("/v1/files", files={"file": ("bad.jsonl", bad)}, data={"purpose": "fine-tune"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "line 2" in message and "line 3" in message
    assert all(f["filename"] != "bad.jsonl" for f in client.get("/v1/files").json()["data"])


def test_wrong_extension_and_purpose(client: TestClient) -> None:
    response = client.post("/v1/files", files={"file": ("x.txt", b"hi")}, data={"purpose": "fine-tune"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"
    response = client.post(
        "/v1/files", files={"file": ("x.jsonl", b'{"text":"a"}\n')}, data={"purpose": "batch"}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "purpose"


def test_queued_job_can_be_cancelled_once(client: TestClient) -> None:
    job = client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "demo-tiny-llama",
            "training_file": "demo-antonyms",
            "suffix": "cancel-me",
            "metadata": {"team": "a"},
        },
    ).json()
    assert job["status"] == "queued" and job["metadata"] == {"team": "a"}
    cancelled = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    again = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert again.status_code == 400 and again.json()["error"]["code"] == "job_not_cancellable"
    listed = client.get("/v1/fine_tuning/jobs", params={"metadata": '{"team": "a"}'}).json()["data"]
    assert [item["id"] for item in listed] == [job["id"]]


def test_list_pagination_cursor(client: TestClient) -> None:
    ids = [
        client.post(
            "/v1/fine_tuning/jobs", json={"model": "demo-tiny-llama", "training_file": "demo-antonyms"}
        ).json()["id"]
        for _ in range(3)
    ]
    first = client.get("/v1/fine_tuning/jobs", params={"limit": 2}).json()
    assert first["has_more"] is True and [job["id"] for job in first["data"]] == ids[::-1][:2]
    second = client.get("/v1/fine_tuning/jobs", params={"limit": 2, "after": first["data"][-1]["id"]}).json()
    assert second["data"][0]["id"] == ids[0]
