"""integrations: wandb, through a real training worker, in W&B's offline mode (no network).

The job reports OpenAI's integrations block, and the worker writes a W&B run under the data
directory whose summary holds the job's last metrics under OpenAI's names.
"""

from __future__ import annotations

import time

import openai
import pytest

from tests.stack import ADMIN_KEY


@pytest.mark.slow
def test_a_job_logs_to_wandb_offline(stack_factory) -> None:
    pytest.importorskip("wandb")
    stack = stack_factory("sqlite", workers=("training",), settings={"LORABOARD_WANDB_MODE": "offline"})
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=300)
    job = client.fine_tuning.jobs.create(
        model="demo-tiny-llama",
        training_file="demo-antonyms",
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"max_steps": 6, "logging_steps": 2, "batch_size": 4}},
        },
        integrations=[{"type": "wandb", "wandb": {"project": "loraboard-test", "tags": ["ci"]}}],
    )
    assert job.integrations and job.integrations[0].wandb.project == "loraboard-test"
    deadline = time.monotonic() + 300
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, stack.log("worker-training")
        time.sleep(0.5)
    assert job.status == "succeeded", (job.error, stack.log("worker-training"))

    # The offline run's record (W&B's binary log of protobuf records): the metrics rows went in,
    # under OpenAI's names, along with the run config.
    (record,) = (stack.data_dir / "wandb").glob(f"wandb/offline-run-*-{job.id}/run-{job.id}.wandb")
    logged = record.read_bytes()
    assert logged.count(b"train_loss") >= 3 and b"learning_rate" in logged  # steps 2, 4, 6
    assert b"loraboard-test" in logged and b"demo-antonyms" in logged
    messages = [event.message for event in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Logging to Weights & Biases: project loraboard-test (offline)" in messages
