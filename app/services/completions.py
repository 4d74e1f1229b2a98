"""Chat completions, served by the workers' inference queue (the API process loads no model).

A model name resolves to a base model plus, optionally, an adapter directory:
  ft:<base>:<suffix>:<job id>                 the job's final adapter
  ft:<base>:<suffix>:<job id>:ckpt-step-<N>   one of its checkpoints
  demo-tiny-llama, a hub id in the local Hugging Face cache, or a model directory under an
  allowed root                                 the base model alone
Anything else is 404 model_not_found at once: the inference worker never spends a
minute of hub retries on a made-up name, and never reads a server path.

Waiting for the answer holds no server thread: the endpoint awaits the result, reading
the result backend briefly from a thread (the streamed pieces, too: the worker writes
them into its task's state). With no inference worker alive the
request is refused at once (503), and every task carries `expires`, so one whose
client gave up is discarded by the worker instead of running later.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult
from sqlmodel import Session, select

from app.api import schemas
from app.config import get_settings
from app.errors import APIError
from app.lifecycle import artifacts, model_names
from app.lifecycle.task_queue import celery_client
from app.models import Checkpoint, Run, RunStatus
from app.services.ownership import visible
from app.services.sources import allowed_local_path, is_hub_reference
from app.services.workers import workers_online
from core.model_catalog import BUILTIN_MODELS
from core.queues import CHAT_COMPLETION_TASK, INFERENCE_QUEUE
from core.run_config import RunConfig

QUANTIZATION_FIELDS = ("use_4bit", "bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "use_nested_quant")
# How often a waiting request reads the result backend: a token's worth of latency at most.
POLL_INTERVAL_S = 0.05


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
    reference = model_names.parse_model_reference(model)
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
    run = session.get(Run, run_id)
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


def start_chat(session: Session, *, model: str, **options: Any) -> tuple[AsyncResult, dict[str, Any]]:
    """Resolve the model, check a worker is there to answer, send the task (it expires unanswered);
    -> (the pending task, the resolved target)."""
    target = resolve_model(session, model)
    if not any(INFERENCE_QUEUE in node.queues for node in workers_online(session).nodes):
        raise APIError(
            503,
            "No inference worker is running; start one (python -m worker inference) and try again.",
            code="no_inference_worker",
        )
    session.close()  # the wait may be long: give the database connection back to the pool now
    pending = celery_client().send_task(
        CHAT_COMPLETION_TASK,
        kwargs={**target, **options},
        expires=get_settings().completion_timeout_s,
    )
    return pending, target


def _timeout_error(timeout: float) -> APIError:
    return APIError(
        504,
        f"No inference worker answered within {timeout:.0f} s; is a worker consuming the 'inference' queue?",
        code="worker_timeout",
    )


def _generation_error(detail: Any) -> APIError:
    return APIError(
        500, f"Generation failed on the worker: {detail}", code="generation_failed", type="server_error"
    )


def complete_chat(session: Session, *, model: str, **options: Any) -> schemas.ChatCompletion:
    """Blocking: for callers already on a worker thread (the playground's form post)."""
    pending, target = start_chat(session, model=model, **options)
    timeout = get_settings().completion_timeout_s
    try:
        answer = pending.get(timeout=timeout, propagate=False)
    except CeleryTimeout as error:
        pending.revoke()
        raise _timeout_error(timeout) from error
    if pending.failed():
        raise _generation_error(answer)
    return completion_body(model, target, answer)


async def read_task(pending: AsyncResult) -> tuple[str, Any]:
    """The task's state and result (or its streamed pieces so far), read without blocking the loop."""
    meta = await asyncio.to_thread(pending.backend.get_task_meta, pending.id)
    return meta.get("status", "PENDING"), meta.get("result")


async def await_chat(pending: AsyncResult) -> dict[str, Any]:
    """The worker's answer; polls the result backend (SQLite or Redis) from the event loop."""
    timeout = get_settings().completion_timeout_s
    deadline = time.monotonic() + timeout
    while True:
        status, result = await read_task(pending)
        if status == "SUCCESS":
            return result
        if status in ("FAILURE", "REVOKED"):
            raise _generation_error(result)
        if time.monotonic() > deadline:
            await asyncio.to_thread(pending.revoke)
            raise _timeout_error(timeout)
        await asyncio.sleep(POLL_INTERVAL_S)


def completion_body(model: str, target: dict[str, Any], answer: dict[str, Any]) -> schemas.ChatCompletion:
    logprobs = answer.get("logprobs")
    return schemas.ChatCompletion(
        id=completion_id(),
        created=int(time.time()),
        model=model,
        system_fingerprint=fingerprint(target),
        choices=[
            schemas.Choice(
                index=0,
                message=schemas.AssistantMessage(content=answer["content"]),
                finish_reason=answer["finish_reason"],
                logprobs=schemas.ChoiceLogprobs(content=logprobs) if logprobs is not None else None,
            )
        ],
        usage=usage(answer["prompt_tokens"], answer["completion_tokens"]),
    )


def completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def fingerprint(target: dict[str, Any]) -> str:
    """OpenAI's system_fingerprint: changes when what serves the model does (base, adapter, quantization)."""
    digest = hashlib.sha256(json.dumps(target, sort_keys=True).encode()).hexdigest()
    return f"fp_{digest[:10]}"


def usage(prompt_tokens: int, completion_tokens: int) -> schemas.Usage:
    return schemas.Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
