"""Every dashboard template renders, against a migrated in-process SQLite database.

Runs are written straight into the database in the states a worker leaves them in
(the stack-level path through a real worker is tests/e2e/test_dashboard.py).
"""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.db import get_engine
from app.lifecycle import artifacts
from app.models import Checkpoint, Event, Metric, Run, utcnow
from app.pages.templating import TEMPLATES_DIR, templates
from core.run_config import preset_config
from tests.paths import DEMO_DATA

DEMO_FILE = DEMO_DATA / "antonyms-train.jsonl"


def seed_run(status: str, steps: int, **fields: object) -> str:
    """A run as a worker leaves it: metrics every step, an eval every 10, one checkpoint."""
    config = preset_config("demo", max_steps=40, logging_steps=1, save_steps=20)
    with Session(get_engine()) as session:
        run = Run(
            config=config.model_dump(mode="json"),
            status=status,
            suffix=f"seed-{status}",
            started_at=utcnow() - timedelta(seconds=60),
            total_steps=40,
            current_step=steps,
            derived={"total_steps": 40, "warmup_steps": 2, "effective_batch_size": 16},
            **fields,
        )
        session.add(run)
        session.flush()
        for step in range(1, steps + 1):
            session.add(
                Metric(
                    run_id=run.id,
                    step=step,
                    loss=3 * math.exp(-step / 15),
                    learning_rate=2e-3,
                    grad_norm=0.5,
                    tokens_per_second=1000.0,
                    tokens_seen=step * 900,
                )
            )
            if step % 10 == 0:
                session.add(Metric(run_id=run.id, step=step, eval_loss=2 * math.exp(-step / 20)))
        session.add(Event(run_id=run.id, message="Training started on worker training@test"))
        if steps >= 20:
            session.add(
                Checkpoint(
                    run_id=run.id,
                    step=20,
                    path=str(artifacts.checkpoint_dir(run.id, 20)),
                    metrics={"loss": 1.2},
                )
            )
        session.commit()
        return run.id


def stored_metric_ids(run_id: str) -> list[int]:
    """The ids of every metric row of the run (training and evaluation), oldest first."""
    with Session(get_engine()) as session:
        rows = session.exec(select(Metric.id).where(Metric.run_id == run_id).order_by(Metric.id))
        return [int(metric_id) for metric_id in rows if metric_id is not None]


@pytest.fixture(scope="module")
def seeded(client: TestClient) -> dict[str, str]:
    succeeded = seed_run("succeeded", 40, finished_at=utcnow())
    with Session(get_engine()) as session:
        run = session.get(Run, succeeded)
        run.fine_tuned_model = f"ft:demo-tiny-llama:seed:{succeeded}"
        session.add(run)
        session.commit()
    artifacts.adapter_dir(succeeded).mkdir(parents=True, exist_ok=True)
    return {
        "succeeded": succeeded,
        "running": seed_run("running", 12),
        "failed": seed_run(
            "failed",
            5,
            error_code="training_error",
            finished_at=utcnow(),
            error_message="OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        ),
        "paused": seed_run("paused", 20),
    }


def test_every_template_renders(client: TestClient, seeded: dict[str, str]) -> None:
    upload = client.post("/datasets", files={"file": ("demo.jsonl", DEMO_FILE.read_bytes())})
    assert upload.status_code == 200, upload.text
    bad_upload = client.post("/datasets", files={"file": ("bad.jsonl", b'{"text": 1}\n')})
    assert bad_upload.status_code == 400
    pages = [
        "/",
        "/?status=running",
        "/runs/new",
        "/runs/new?preset=demo",
        f"/runs/new?clone={seeded['succeeded']}",
        "/datasets",
        "/datasets/demo-antonyms",
        "/compare",
        f"/compare?runs={seeded['succeeded']}&runs={seeded['failed']}",
        "/playground",
        "/keys",
        "/login",
        *[f"/runs/{run_id}" for run_id in seeded.values()],
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:500])
        assert "<title>" in response.text and "Traceback" not in response.text
    estimate = client.post(
        "/runs/new/estimate", data={"model_name": "demo-tiny-llama", "dataset": "demo-antonyms"}
    )
    assert estimate.status_code == 200
    # No inference worker here: a model that does not resolve answers at once, as an error in the exchange.
    chat = client.post(
        "/playground/chat", data={"model": "ft:demo-tiny-llama:x:ftjob-000000", "prompt": "hi"}
    )
    assert chat.status_code == 200 and "does not exist" in chat.text
    # A finished run's stream renders the live fragments once and ends.
    client.get(f"/runs/{seeded['succeeded']}/stream")
    # A browser gets an HTML error page; an API client the OpenAI-shaped JSON.
    missing = client.get("/runs/ftjob-doesnotexist", headers={"accept": "text/html"})
    assert missing.status_code == 404 and "Not found" in missing.text and "<title>" in missing.text
    unknown = client.get("/no-such-page", headers={"accept": "text/html"})
    assert unknown.status_code == 404 and "<title>" in unknown.text
    api_missing = client.get("/v1/fine_tuning/jobs/ftjob-doesnotexist", headers={"accept": "text/html"})
    assert api_missing.json()["error"]["code"] == "job_not_found"
    rendered = {key[1] for key in templates.env.cache}  # (loader, name) of every template loaded
    on_disk = {str(path.relative_to(TEMPLATES_DIR)) for path in TEMPLATES_DIR.rglob("*.html")}
    assert on_disk - rendered == set()


def test_fragment_or_page_by_hx_request(client: TestClient, seeded: dict[str, str]) -> None:
    page = client.get("/?status=failed")
    fragment = client.get("/?status=failed", headers={"HX-Request": "true"})
    assert page.text.startswith("<!doctype html>")
    assert "<html" not in fragment.text and 'id="runs-table"' in fragment.text
    assert seeded["failed"] in fragment.text and seeded["succeeded"] not in fragment.text


def test_runs_list_shows_progress_loss_and_polls_while_active(
    client: TestClient, seeded: dict[str, str]
) -> None:
    html = client.get("/", headers={"HX-Request": "true"}).text
    assert 'hx-trigger="every 2s"' in html  # a running run is on the page
    assert 'aria-valuenow="30.0"' in html  # 12 of 40 steps
    finished_only = client.get("/?status=succeeded", headers={"HX-Request": "true"}).text
    assert "every 2s" not in finished_only


def test_run_page_has_history_charts_and_actions(client: TestClient, seeded: dict[str, str]) -> None:
    html = client.get(f"/runs/{seeded['succeeded']}").text
    history = json.loads(
        html.split('<script type="application/json" id="run-metrics">')[1].split("</script>")[0]
    )
    assert [row["id"] for row in history] == stored_metric_ids(seeded["succeeded"])  # all, oldest first
    assert f"/v1/fine_tuning/jobs/{seeded['succeeded']}/adapter" in html
    assert "sse-connect" not in html  # finished: nothing to stream
    running = client.get(f"/runs/{seeded['running']}").text
    assert f'sse-connect="/runs/{seeded["running"]}/stream?after=' in running and "Cancel" in running
    assert "Resume" in client.get(f"/runs/{seeded['paused']}").text


def test_failed_run_shows_error_and_out_of_memory_hint(client: TestClient, seeded: dict[str, str]) -> None:
    html = client.get(f"/runs/{seeded['failed']}").text
    assert "CUDA out of memory" in html
    assert "The GPU ran out of memory" in html and "per_device_train_batch_size" in html


def parse_sse(text: str) -> list[dict[str, str]]:
    messages = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = fields[name] + "\n" + value if name in fields else value
        if "event" in fields:
            messages.append(fields)
    return messages


def test_stream_resumes_after_last_event_id(client: TestClient, seeded: dict[str, str]) -> None:
    run_id = seeded["succeeded"]
    everything = parse_sse(client.get(f"/runs/{run_id}/stream").text)
    metric_ids = [int(message["id"]) for message in everything if message["event"] == "metrics"]
    assert metric_ids == stored_metric_ids(run_id)  # all, oldest first
    assert {"status", "log", "checkpoints"} <= {message["event"] for message in everything}
    assert everything[-1]["event"] == "done"
    # Only metrics carry ids: a fragment never moves the browser's Last-Event-ID.
    assert all("id" not in message for message in everything if message["event"] != "metrics")

    resumed = parse_sse(
        client.get(f"/runs/{run_id}/stream", headers={"Last-Event-ID": str(metric_ids[9])}).text
    )
    assert [int(m["id"]) for m in resumed if m["event"] == "metrics"] == metric_ids[10:]
    # A reload passes ?after=; the later of the two wins.
    both = parse_sse(
        client.get(
            f"/runs/{run_id}/stream?after={metric_ids[20]}", headers={"Last-Event-ID": str(metric_ids[5])}
        ).text
    )
    assert [int(m["id"]) for m in both if m["event"] == "metrics"] == metric_ids[21:]


def test_form_errors_show_at_the_field(client: TestClient) -> None:
    form = {
        "model_name": "demo-tiny-llama",
        "dataset": "demo-antonyms",
        "lora_r": "0",
        "optim": "adamw_torch",
        "learning_rate": "abc",
        "lr_scheduler_type": "cosine",
    }
    response = client.post("/runs/new", data=form, follow_redirects=False)
    assert response.status_code == 400
    html = response.text
    lora_error = html.split('id="field-lora_r"')[1].split('id="field-')[0]
    assert 'class="field-error"' in lora_error and "greater than or equal to 1" in lora_error
    assert 'class="field-error"' in html.split('id="field-learning_rate"')[1].split('id="field-')[0]
    # Errors about the whole config (pydantic runs them once the fields are valid) show above the form.
    both = {
        **form,
        "lora_r": "8",
        "learning_rate": "0.001",
        "fp16": ["false", "true"],
        "bf16": ["false", "true"],
    }
    response = client.post("/runs/new", data=both, follow_redirects=False)
    assert response.status_code == 400 and "fp16 and bf16 are exclusive" in response.text


def test_form_launches_a_run_with_the_demo_preset(client: TestClient) -> None:
    page = client.get("/runs/new?preset=demo").text
    assert 'value="demo-tiny-llama"' in page and "More about <code>lora_r</code>" in page
    for group in ("Model and data", "QLoRA adapter", "Quantization", "Training", "Schedule", "Checkpoints"):
        assert group in page
    form = {
        "model_name": "demo-tiny-llama",
        "dataset": "demo-antonyms",
        "lora_r": "8",
        "lora_alpha": "16",
        "target_modules": "q_proj, v_proj",
        "max_steps": "7",
        "suffix": "from-the-form",
        "use_4bit": ["false", "true"],
        "device_map": '{"": 0}',
        "max_seq_length": "",
    }
    response = client.post("/runs/new", data=form, follow_redirects=False)
    assert response.status_code == 303, response.text[:2000]
    run_id = response.headers["location"].rsplit("/", 1)[1]
    job = client.get(f"/v1/fine_tuning/jobs/{run_id}").json()
    config = job["loraboard"]["config"]
    assert job["status"] == "queued" and job["user_provided_suffix"] == "from-the-form"
    assert (
        config["lora_r"] == 8
        and config["target_modules"] == ["q_proj", "v_proj"]
        and config["max_steps"] == 7
    )
    assert (
        config["use_4bit"] is True and config["gradient_checkpointing"] is False
    )  # unchecked boxes are false
    assert config["device_map"] == {"": 0} and config["max_seq_length"] is None
    cancelled = client.post(f"/runs/{run_id}/cancel", headers={"HX-Request": "true"})
    assert cancelled.status_code == 200 and "badge-cancelled" in cancelled.text


def test_clone_prefills_the_form(client: TestClient, seeded: dict[str, str]) -> None:
    html = client.get(f"/runs/new?clone={seeded['failed']}").text
    assert f'Cloned from <a href="/runs/{seeded["failed"]}">' in html
    assert 'id="f-max_steps" name="max_steps" type="number" inputmode="decimal" step="1" value="40"' in html


def test_live_estimates(client: TestClient) -> None:
    form = {
        "model_name": "NousResearch/Llama-2-7b-chat-hf",
        "dataset": "mlabonne/guanaco-llama2-1k",
        "lora_r": "64",
        "per_device_train_batch_size": "4",
        "gradient_accumulation_steps": "2",
        "warmup_ratio": "0.03",
        "num_train_epochs": "1",
        "gradient_checkpointing": ["false", "true"],
        "use_4bit": ["false", "true"],
    }
    html = client.post("/runs/new/estimate", data=form).text
    assert "33,554,432" in html
    assert '<dd data-testid="effective-batch">8</dd>' in html
    assert '<dd data-testid="total-steps">125</dd>' in html  # ceil(1000 / 4) = 250 micro-batches / 2
    assert "data-static-chart" in html and "24 GB GPU" in html and "80 GB GPU" in html
    broken = client.post("/runs/new/estimate", data={**form, "lora_r": "-3"}).text
    assert "Not valid yet" in broken and "lora_r" in broken


def test_dataset_upload_preview(client: TestClient) -> None:
    rows = [
        {"prompt": "Say hi", "completion": " hi"},
        {"prompt": "Count " + "one " * 300, "completion": " done"},
    ]
    body = "\n".join(json.dumps(row) for row in rows).encode()
    response = client.post("/datasets", files={"file": ("pc.jsonl", body)})
    assert response.status_code == 200
    assert response.headers["HX-Push-Url"].startswith("/datasets/file-")
    html = response.text
    assert '<span class="stat-value" data-testid="dataset-format">prompt_completion</span>' in html
    assert '<span class="prompt">Say hi</span><mark class="completion"> hi</mark>' in html
    file_id = response.headers["HX-Push-Url"].rsplit("/", 1)[1]
    short = client.get(f"/datasets/{file_id}?max_seq_length=64").text
    assert '<span class="stat-value" data-testid="truncated">1</span>' in short
    bad = client.post("/datasets", files={"file": ("bad.jsonl", b'{"text": "ok"}\nnot json\n')})
    assert bad.status_code == 400 and "line 2" in bad.text


def test_compare_lists_differences(client: TestClient, seeded: dict[str, str]) -> None:
    html = client.get(f"/compare?runs={seeded['succeeded']}&runs={seeded['running']}&x=tokens").text
    assert 'id="compare-data"' in html and "Same config in every run" in html
    data = json.loads(html.split('id="compare-data">')[1].split("</script>")[0])
    assert data["x"] == "tokens" and [len(run["metrics"]) for run in data["runs"]] == [44, 13]


def test_playground_lists_finished_adapters(client: TestClient, seeded: dict[str, str]) -> None:
    html = client.get("/playground").text
    assert f"ft:demo-tiny-llama:seed:{seeded['succeeded']}" in html


def test_run_header_says_what_the_first_minute_is_spent_on(client: TestClient) -> None:
    """Before step 1 the header names the phase (a compile is not a hang); after it, the
    seconds to the first step and where they went."""
    since = "2026-12-06T20:41:05+00:00"
    compiling = seed_run(
        "running",
        0,
        runtime={"phase": {"name": "step 1: compiling the decoder layers", "since": since}},
    )
    html = client.get(f"/runs/{compiling}").text
    phase = html.split('data-testid="run-phase">')[1].split("</div>")[0]
    assert "now: step 1: compiling the decoder layers" in phase and "since 20:41:05 UTC" in phase
    assert 'data-elapsed-since="2026-12-06T20:41:05+00:00"' in phase  # the page ticks the seconds

    timings = {"model_files_s": 0.4, "data_s": 2.0, "model_load_s": 11.6, "trainer_s": 3.0}
    timings["first_step_s"] = 83.0
    done = seed_run("succeeded", 40, runtime={"phase": None, "timings": timings})
    html = client.get(f"/runs/{done}").text
    assert 'data-testid="run-phase"' not in html
    line = " ".join(html.split('data-testid="first-step">')[1].split("</div>")[0].split())
    assert line.startswith("first step after <strong>1m 23s</strong>:")
    assert "loading the model 12s" in line and "tokenizing 3s" in line and "step 1 1m 06s" in line
