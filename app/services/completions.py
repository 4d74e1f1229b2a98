"""Chat completions, served by the workers' inference queue (the API process loads no model).

A model name resolves to a base model plus, optionally, an adapter directory:
  ft:<base>:<suffix>:<job id>                 the job's final adapter
  ft:<base>:<suffix>:<job id>:ckpt-step-<N>   one of its checkpoints
  demo-tiny-llama, a hub id in the local Hugging Face cache, or a model directory under an
  allowed root                                 the base model alone
Anything else is 404 model_not_found at once: the inference worker never spends a
minute of hub retries on a made-up name, and never reads a server path.

Waiting for the answer holds no server thread: the endpoint awaits the result, polling
the result backend briefly from the threadpool. With no inference worker alive the
request is refused at once (503), and every task carries `expires`, so one whose
client gave up is discarded by the worker instead of running later.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

from celery.result import AsyncResult
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from app.config import get_settings
from app.errors import APIError
from app.model_catalog import BUILTIN_MODELS
from app.models import Checkpoint, RunStatus
from app.run_config import RunConfig
from app.services import artifacts, runs
from app.services.ownership import visible
from app.services.sources import allowed_local_path, is_hub_reference
from app.services.workers import workers_online

QUANTIZATION_FIELDS = ("use_4bit", "bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "use_nested_quant")
POLL_INTERVAL_S = 0.1
INFERENCE_QUEUE = "inference"  # worker/celery_app.py routes chat completions there


def _model_not_found(model: str) -> APIError:
    shown = "".join(char if char.isprintable() else "?" for char in model[:200])
    return APIError(404, f"The model '{shown}' does not exist", param="model", code="model_not_found")


def is_known_base_model(model: str) -> bool:
    """A built-in model (prepared on first use), a hub model already in the local cache, or a model
    directory under an allowed root."""
    if model in BUILTIN_MODELS:
        return True
    if is_hub_reference(model):
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    local = allowed_local_path(model)
    return local is not None and (local / "config.json").is_file()


def resolve_model(session: Session, model: str) -> dict[str, Any]:
    """-> {base_model, adapter_dir, quantization} for the inference task."""
    reference = runs.parse_model_reference(model)
    if reference is None:
        if not is_known_base_model(model):
            raise _model_not_found(model)
        defaults = RunConfig.model_construct()
        return {
            "base_model": model,
            "adapter_dir": None,
            "quantization": {name: getattr(defaults, name) for name in QUANTIZATION_FIELDS},
        }
    run_id, step = reference
    run = session.get(runs.Run, run_id)
    if run is None or not visible(run.owner):
        raise _model_not_found(model)
    if step is None:
        adapter = artifacts.adapter_dir(run.id)
        if run.status != RunStatus.succeeded or not adapter.is_dir():
            raise APIError(
                404,
                f"The model '{model}' is not ready (job status: {run.status})",
                param="model",
                code="model_not_found",
            )
    else:
        checkpoint = session.exec(
            select(Checkpoint).where(Checkpoint.run_id == run.id, Checkpoint.step == step)
        ).first()
        if checkpoint is None or not Path(checkpoint.path).is_dir():
            raise APIError(
                404, f"The checkpoint model '{model}' does not exist", param="model", code="model_not_found"
            )
        adapter = Path(checkpoint.path)
    return {
        "base_model": run.config["model_name"],
        "adapter_dir": str(adapter),
        "quantization": {name: run.config[name] for name in QUANTIZATION_FIELDS},
    }


def start_chat(
    session: Session,
    *,
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    stop: list[str] | None,
) -> AsyncResult:
    """Resolve the model, check a worker is there to answer, send the task (it expires unanswered)."""
    target = resolve_model(session, model)
    if not any(INFERENCE_QUEUE in node.queues for node in workers_online(session).nodes):
        raise APIError(
            503,
            "No inference worker is running; start one (python -m worker inference) and try again.",
            code="no_inference_worker",
        )
    session.close()  # the wait may be long: give the database connection back to the pool now
    from worker.celery_app import celery_app

    return celery_app.send_task(
        "loraboard.chat_completion",
        kwargs={
            **target,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "stop": stop,
        },
        expires=get_settings().completion_timeout_s,
    )


async def wait_for_answer(pending: AsyncResult) -> dict[str, Any]:
    """The worker's answer; 504 after completion_timeout_s. Each poll borrows a thread briefly."""
    timeout = get_settings().completion_timeout_s
    deadline = time.monotonic() + timeout
    while not await run_in_threadpool(pending.ready):
        if time.monotonic() >= deadline:
            await run_in_threadpool(pending.revoke)
            raise APIError(
                504,
                f"No inference worker answered within {timeout:.0f} s; the request expires unanswered.",
                code="worker_timeout",
            )
        await asyncio.sleep(POLL_INTERVAL_S)
    answer = await run_in_threadpool(pending.get, propagate=False)
    if pending.failed():
        raise APIError(
            500, f"Generation failed on the worker: {answer}", code="generation_failed", type="server_error"
        )
    return dict(answer)


def completion_object(model: str, answer: dict[str, Any]) -> dict[str, Any]:
    created = int(time.time())
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer["content"], "refusal": None},
                "finish_reason": answer["finish_reason"],
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": answer["prompt_tokens"],
            "completion_tokens": answer["completion_tokens"],
            "total_tokens": answer["prompt_tokens"] + answer["completion_tokens"],
        },
    }
