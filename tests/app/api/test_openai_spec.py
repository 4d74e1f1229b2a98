"""Every /v1 body of a flow and of its error cases, checked against OpenAI's own schemas (in process).

The job states a worker leaves behind (running, pausing, paused, failed; warnings, metrics,
checkpoints) are written straight into the migrated SQLite database, as a worker writes them;
tests/functional/test_openai_flow.py checks the same through real workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.db import get_engine
from app.lifecycle import run_states
from app.models import Checkpoint, Event, Run, utcnow
from app.services import runs
from tests.openai_spec import assert_conforms, spec_errors
from tests.paths import DEMO_DATA

DEMO_FILE = DEMO_DATA / "antonyms-train.jsonl"
JOB = {"model": "demo-tiny-llama", "training_file": "demo-antonyms"}


def ok(response, schema: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    body = response.json()
    assert_conforms(schema, body)
    return body


def refused(response, status: int, param: str | None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert_conforms("ErrorResponse", body)
    assert body["error"]["param"] == param, body
    return body["error"]


def test_the_checker_catches_the_reported_breaks() -> None:
    """The spec check itself: each body the issue reported is refused."""
    assert spec_errors("OpenAIFile", {"status_details": None})
    assert spec_errors("FineTuningJobEvent", {"level": "warning", "data": None})
    assert spec_errors("FineTuneSupervisedHyperparameters", {"n_epochs": 3.0})
    assert spec_errors("FineTuneSupervisedHyperparameters", {"n_epochs": 51})
    assert spec_errors("ListFilesResponse", {"object": "list", "data": [], "has_more": False})
    assert not spec_errors("FineTuneSupervisedHyperparameters", {"learning_rate_multiplier": 0.5})


def test_files_flow_conforms(client: TestClient) -> None:
    empty = ok(client.get("/v1/files", params={"purpose": "fine-tune-results"}), "ListFilesResponse")
    assert empty["data"] == [] and empty["has_more"] is False
    uploaded = ok(
        client.post(
            "/v1/files",
            files={"file": ("antonyms.jsonl", DEMO_FILE.read_bytes())},
            data={"purpose": "fine-tune"},
        ),
        "OpenAIFile",
    )
    assert "status_details" not in uploaded
    listed = ok(client.get("/v1/files", params={"limit": 1}), "ListFilesResponse")
    assert listed["first_id"] == listed["last_id"] == listed["data"][0]["id"]
    ok(client.get(f"/v1/files/{uploaded['id']}"), "OpenAIFile")
    refused(client.get("/v1/files", params={"limit": 0}), 400, "limit")
    refused(client.get("/v1/files/file-nope"), 404, "id")
    ok(client.delete(f"/v1/files/{uploaded['id']}"), "DeleteFileResponse")


def test_job_flow_conforms(client: TestClient) -> None:
    job = ok(
        client.post(
            "/v1/fine_tuning/jobs",
            json={
                **JOB,
                "suffix": "spec",
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
            },
        ),
        "FineTuningJob",
    )
    assert job["hyperparameters"]["n_epochs"] == 3 and isinstance(job["hyperparameters"]["n_epochs"], int)
    # The demo model's "auto" learning rate is its preset's: the multiplier is 1, not 5.
    assert job["hyperparameters"]["learning_rate_multiplier"] == 1.0
    ok(client.get("/v1/fine_tuning/jobs", params={"limit": 2}), "ListPaginatedFineTuningJobsResponse")
    ok(client.get(f"/v1/fine_tuning/jobs/{job['id']}"), "FineTuningJob")
    events = ok(client.get(f"/v1/fine_tuning/jobs/{job['id']}/events"), "ListFineTuningJobEventsResponse")
    assert events["data"][0]["data"] == {"model": "demo-tiny-llama"}
    ok(client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints"), "ListFineTuningJobCheckpointsResponse")
    ok(client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel"), "FineTuningJob")
    refused(client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel"), 400, "fine_tuning_job_id")
    refused(client.get("/v1/fine_tuning/jobs/ftjob-nope"), 404, "fine_tuning_job_id")
    ok(client.get("/v1/models"), "ListModelsResponse")
    ok(client.get("/v1/models/demo-tiny-llama"), "Model")
    refused(client.get("/v1/models/ft:x:y:ftjob-00"), 404, "model")


SEEDED: list[str] = []


@pytest.fixture(autouse=True)
def _forget_seeded_runs() -> Iterator[None]:
    """Seeded running jobs' ETAs tick on: other modules' tests that compare job lists must not see them."""
    yield
    with Session(get_engine()) as session:
        while SEEDED:
            run = session.get(Run, SEEDED.pop())
            if run is not None:
                session.delete(run)
        session.commit()


def _seed(status: str, **fields: object) -> str:
    with Session(get_engine()) as session:
        run = runs.create_run(session, runs.RunConfig(model_name="demo-tiny-llama", dataset="demo-antonyms"))
        # The worker's own ETA: estimated_finish is then the same on every read (other tests list jobs).
        eta = {"eta_seconds": 100.0, "eta_at": utcnow()}
        for name, value in {"status": status, "current_step": 5, "total_steps": 10, **eta, **fields}.items():
            setattr(run, name, value)
        session.add(run)
        session.add(Event(run_id=run.id, message="compile failed", level="warning"))
        session.add(Event(run_id=run.id, message="old row without data", data=None))
        session.add(
            Checkpoint(
                run_id=run.id,
                step=5,
                path="/nonexistent",
                metrics={"step": 5, "train_loss": 1.5, "valid_loss": None, "learning_rate": 1e-3},
            )
        )
        session.commit()
        SEEDED.append(run.id)
        return run.id


@pytest.mark.parametrize(
    ("status", "public"),
    [("running", "running"), ("pausing", "running"), ("cancelling", "running"), ("paused", "cancelled")],
)
def test_loraboard_states_report_an_openai_status(client: TestClient, status: str, public: str) -> None:
    run_id = _seed(status)
    job = ok(client.get(f"/v1/fine_tuning/jobs/{run_id}"), "FineTuningJob")
    assert job["status"] == public and job["loraboard"]["status"] == status
    events = ok(client.get(f"/v1/fine_tuning/jobs/{run_id}/events"), "ListFineTuningJobEventsResponse")
    assert {event["level"] for event in events["data"]} == {"info", "warn"}
    checkpoints = ok(
        client.get(f"/v1/fine_tuning/jobs/{run_id}/checkpoints"), "ListFineTuningJobCheckpointsResponse"
    )
    assert checkpoints["data"][0]["metrics"] == {"step": 5.0, "train_loss": 1.5, "learning_rate": 1e-3}


def test_a_failed_job_conforms(client: TestClient) -> None:
    run_id = _seed("failed", error_code="training_error", error_message="CUDA out of memory")
    job = ok(client.get(f"/v1/fine_tuning/jobs/{run_id}"), "FineTuningJob")
    assert job["error"] == {"code": "training_error", "message": "CUDA out of memory", "param": None}


def test_epochs_outside_openais_range_report_auto(client: TestClient) -> None:
    body = {**JOB, "hyperparameters": {"num_train_epochs": 0.5, "per_device_train_batch_size": 512}}
    job = ok(client.post("/v1/fine_tuning/jobs", json=body), "FineTuningJob")
    assert job["hyperparameters"]["n_epochs"] == "auto" and job["hyperparameters"]["batch_size"] == "auto"
    assert job["loraboard"]["config"]["num_train_epochs"] == 0.5


@pytest.mark.parametrize(
    ("hyperparameters", "param", "words"),
    [
        ({"n_epochs": 51}, "n_epochs", "from 1 to 50"),
        ({"n_epochs": 2.5}, "n_epochs", "integer"),
        ({"batch_size": 512}, "batch_size", "from 1 to 256"),
        ({"learning_rate_multiplier": 0}, "learning_rate_multiplier", "positive"),
        ({"learning_rate_multiplier": 5000}, "learning_rate_multiplier", "learning_rate_multiplier"),
    ],
)
def test_errors_name_the_public_field(
    client: TestClient, hyperparameters: dict, param: str, words: str
) -> None:
    body = {**JOB, "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}}
    error = refused(client.post("/v1/fine_tuning/jobs", json=body), 400, param)
    assert words in error["message"] and "num_train_epochs" not in error["message"]


@pytest.mark.parametrize("method", ["dpo", "reinforcement"])
def test_other_methods_are_refused_as_unsupported(client: TestClient, method: str) -> None:
    body = {**JOB, "method": {"type": method, method: {}}}
    error = refused(client.post("/v1/fine_tuning/jobs", json=body), 400, "method.type")
    assert f"'{method}' is not supported" in error["message"] and error["code"] == "unsupported_method"


def test_integrations_this_server_cannot_honour_are_refused_not_dropped(client: TestClient) -> None:
    # No W&B key and online mode here (tests/functional/test_wandb.py runs it in offline mode).
    body = {**JOB, "integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}
    error = refused(client.post("/v1/fine_tuning/jobs", json=body), 400, "integrations")
    assert "wandb is not available here" in error["message"]
    body = {**JOB, "integrations": [{"type": "comet", "comet": {}}]}
    assert (
        "'comet' is not supported"
        in refused(client.post("/v1/fine_tuning/jobs", json=body), 400, "integrations")["message"]
    )


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"n": 2}, "n"),
    ],
)
def test_chat_options_not_served_are_a_clear_400(client: TestClient, extra: dict, param: str) -> None:
    body = {"model": "demo-tiny-llama", "messages": [{"role": "user", "content": "hi"}], **extra}
    refused(client.post("/v1/chat/completions", json=body), 400, param)


def test_api_jobs_keep_a_checkpoint_per_epoch_by_default(client: TestClient) -> None:
    """OpenAI's default: a checkpoint each epoch, the newest 3 kept; save_steps still decides when sent."""
    default = ok(client.post("/v1/fine_tuning/jobs", json=JOB), "FineTuningJob")["loraboard"]["config"]
    assert default["save_every_epoch"] is True and default["save_total_limit"] == 3
    body = {**JOB, "hyperparameters": {"save_steps": 0}}
    none = ok(client.post("/v1/fine_tuning/jobs", json=body), "FineTuningJob")["loraboard"]["config"]
    assert none["save_every_epoch"] is False and none["save_steps"] == 0
    assert none["save_total_limit"] is None


def test_a_claimed_job_validates_its_files_before_running(client: TestClient) -> None:
    run_id = _seed("queued")
    with Session(get_engine()) as session:
        assert run_states.mark_running(session, run_id, worker="training@test", task_id=None)
        assert (
            ok(client.get(f"/v1/fine_tuning/jobs/{run_id}"), "FineTuningJob")["status"] == "validating_files"
        )
        run_states.mark_training(session, run_id)
    assert ok(client.get(f"/v1/fine_tuning/jobs/{run_id}"), "FineTuningJob")["status"] == "running"


@pytest.mark.parametrize(
    ("url", "words"), [("ftp://x/hook", "http(s) URL"), ("http://127.0.0.1:9/hook", "signing secret")]
)
def test_a_job_webhook_needs_a_url_and_a_secret(client: TestClient, url: str, words: str) -> None:
    body = {**JOB, "metadata": {"webhook_url": url}}
    error = refused(client.post("/v1/fine_tuning/jobs", json=body), 400, "metadata")
    assert words in error["message"]
