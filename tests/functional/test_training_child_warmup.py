"""The training worker's child readies itself before its run, and the next child after it."""

from __future__ import annotations

import time

import httpx

from tests.stack import ADMIN_KEY, Stack

READY = "training child ready in"


def wait_for_log(stack: Stack, text: str, count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.log("worker-training").count(text) >= count:
            return
        time.sleep(0.3)
    raise AssertionError(
        f"{text!r} not {count} times in the worker's log:\n{stack.log('worker-training')[-3000:]}"
    )


def test_each_runs_child_is_ready_before_its_run_and_trains(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = stack_factory("sqlite", workers=("training",))
    wait_for_log(stack, READY, 1)  # the first child, readied at the worker's start

    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    job = {
        "model": "demo-tiny-llama",
        "training_file": "demo-antonyms",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"max_steps": 2}}},
    }
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=60) as client:
        job_id = client.post("/v1/fine_tuning/jobs", json=job).json()["id"]
        deadline = time.monotonic() + 300
        while (status := client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"]) not in {
            "succeeded",
            "failed",
            "cancelled",
        }:
            assert time.monotonic() < deadline, "the run did not finish"
            time.sleep(0.5)
    assert status == "succeeded"
    wait_for_log(stack, READY, 2)  # the child forked for the next run readied itself too
