"""What the model will see of a dataset: rendered samples, token lengths, truncation.

Runs in the server process for previews only, on a bounded number of samples.
Rendering is the worker's own (worker/training/data.py) when it offers it; until
then, the same rules written out here: chat turns through the tokenizer's chat
template, or Llama-2's [INST] format when it has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlmodel import Session

from app.models import DataFile
from app.services.ownership import visible
from app.services.sources import allowed_local_path, is_hub_reference
from core.demo_dataset import demo_dataset_path
from core.demo_tokenizer import build_demo_tokenizer
from core.formats import DatasetError, detect_format, read_records
from core.run_config import DEMO_DATASET_ID, DEMO_MODEL_ID

PREVIEW_SAMPLES = 5
LENGTH_SAMPLES = 2000  # token lengths are measured on at most this many samples
HISTOGRAM_BINS = 16
# Sizes of well-known hub datasets, so the form can derive steps without a download.
KNOWN_DATASET_SIZES = {"mlabonne/guanaco-llama2-1k": 1000, "timdettmers/openassistant-guanaco": 9846}


@dataclass
class RenderedSample:
    prompt: str
    completion: str
    tokens: int | None = None


@dataclass
class Preview:
    source: str
    format: str
    num_samples: int
    samples: list[RenderedSample]
    tokenizer: str
    tokenizer_note: str | None
    max_seq_length: int
    lengths_measured: int
    truncated: int
    histogram: list[dict[str, Any]] = field(default_factory=list)
    length_stats: dict[str, int] = field(default_factory=dict)


def dataset_path(session: Session, reference: str) -> Path | None:
    """A file id or the demo dataset id -> a local file; None for hub ids."""
    if reference == DEMO_DATASET_ID:
        return demo_dataset_path("train")
    if reference.startswith("file-"):
        record = session.get(DataFile, reference)
        return Path(record.path) if record and visible(record.owner) else None
    # Other paths only under the operator's roots: a preview must not read the server's disk.
    path = allowed_local_path(reference)
    return path if path is not None and path.is_file() else None


def count_samples(session: Session, reference: str) -> int | None:
    """How many training samples a dataset holds, when it can be known without downloading it."""
    if reference.startswith("file-"):
        record = session.get(DataFile, reference)
        return record.num_samples if record and visible(record.owner) else None
    if reference in KNOWN_DATASET_SIZES:
        return KNOWN_DATASET_SIZES[reference]
    path = dataset_path(session, reference)
    if path is None:
        return None
    return _count_file(str(path), path.stat().st_mtime)


@lru_cache(maxsize=32)
def _count_file(path: str, _mtime: float) -> int | None:
    try:
        return len(read_records(Path(path)))
    except DatasetError:
        return None


# --- tokenizer ------------------------------------------------------------------------


@lru_cache(maxsize=4)
def load_tokenizer(model_name: str) -> tuple[Any, str, str | None]:
    """(tokenizer, its name, a note when another tokenizer stood in). Local files only: no download."""
    from transformers import AutoTokenizer

    if model_name != DEMO_MODEL_ID and not (
        is_hub_reference(model_name) or allowed_local_path(model_name) is not None
    ):
        note = "That model is not a hub id or a path this server allows; lengths use the demo tokenizer."
    elif model_name != DEMO_MODEL_ID:
        try:
            return AutoTokenizer.from_pretrained(model_name, local_files_only=True), model_name, None
        except Exception:
            note = f"The tokenizer of '{model_name}' is not on this machine; lengths use the demo tokenizer."
    else:
        note = None
    # Built in memory: the same tokenizer the worker saves with the demo model, without torch.
    return build_demo_tokenizer(), DEMO_MODEL_ID, note


# --- rendering ---------------------------------------------------------------------------


def llama2_chat(messages: list[dict[str, str]]) -> str:
    """Llama-2's chat format: [INST] <<SYS>> system <</SYS>> user [/INST] answer </s> per turn."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    text = ""
    for index in range(0, len(turns), 2):
        user = turns[index]["content"]
        if index == 0 and system:
            user = f"<<SYS>>\n{system}\n<</SYS>>\n\n{user}"
        text += f"<s>[INST] {user} [/INST]"
        if index + 1 < len(turns):
            text += f" {turns[index + 1]['content']} </s>"
    return text


def render_sample(record: dict[str, Any], dataset_format: str, tokenizer: Any) -> RenderedSample:
    """The exact text trained on, split into the prompt (no loss) and the completion (loss)."""
    worker_rendering = _worker_renderer()
    if worker_rendering is not None:
        try:
            prompt, completion = worker_rendering(record, dataset_format, tokenizer)
            return RenderedSample(prompt, completion)
        except Exception:  # an interface that changed under us: fall back to the written-out rules
            pass
    if dataset_format == "messages":
        messages = record["messages"]
        prompt_turns, answer = messages[:-1], messages[-1]["content"]
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template(prompt_turns, tokenize=False, add_generation_prompt=True)
            return RenderedSample(prompt, answer + (tokenizer.eos_token or ""))
        return RenderedSample(llama2_chat(prompt_turns), f" {answer} </s>")
    if dataset_format == "prompt_completion":
        return RenderedSample(record["prompt"], record["completion"])
    if dataset_format == "instruction":
        context = f"### Input:\n{record['input']}\n\n" if record.get("input") else ""
        prompt = f"### Instruction:\n{record['instruction']}\n\n{context}### Response:\n"
        return RenderedSample(prompt, record["output"])
    return RenderedSample("", record["text"])  # already templated: the loss covers every token


def _worker_renderer() -> Any:
    """worker/training/data.py's rendering function (record, format, tokenizer) -> (prompt, completion)."""
    import importlib

    try:
        data = importlib.import_module("worker.training.data")  # written by the training side; may not exist
    except Exception:
        return None
    for name in ("render_prompt_completion", "render_sample_parts", "split_prompt_completion"):
        function = getattr(data, name, None)
        if callable(function):
            return function
    return None


# --- the preview ---------------------------------------------------------------------


def build_preview(
    path: Path,
    source: str,
    model_name: str = DEMO_MODEL_ID,
    max_seq_length: int | None = None,
) -> Preview:
    records = read_records(path)
    dataset_format = next((found for record in records[:50] if (found := detect_format(record))), "text")
    tokenizer, tokenizer_name, note = load_tokenizer(model_name)
    limit = max_seq_length or 1024
    step = max(1, len(records) // LENGTH_SAMPLES)
    measured = records[::step][:LENGTH_SAMPLES]  # evenly spread over the file, not its head only
    lengths = []
    for record in measured:
        sample = render_sample(record, dataset_format, tokenizer)
        lengths.append(_token_count(tokenizer, sample.prompt + sample.completion))
    samples = []
    for record in records[:PREVIEW_SAMPLES]:
        sample = render_sample(record, dataset_format, tokenizer)
        sample.tokens = _token_count(tokenizer, sample.prompt + sample.completion)
        samples.append(sample)
    return Preview(
        source=source,
        format=dataset_format,
        num_samples=len(records),
        samples=samples,
        tokenizer=tokenizer_name,
        tokenizer_note=note,
        max_seq_length=limit,
        lengths_measured=len(lengths),
        truncated=sum(1 for length in lengths if length > limit),
        histogram=histogram(lengths, limit),
        length_stats=_stats(lengths),
    )


def _token_count(tokenizer: Any, text: str) -> int:
    # Special tokens already written in the text (<s>) are not added twice.
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _stats(lengths: list[int]) -> dict[str, int]:
    if not lengths:
        return {}
    ordered = sorted(lengths)
    return {
        "min": ordered[0],
        "median": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
        "max": ordered[-1],
    }


def histogram(lengths: list[int], limit: int) -> list[dict[str, Any]]:
    """Equal-width bins from the shortest to the longest sample; each knows if it lies past the limit."""
    if not lengths:
        return []
    low, top = min(lengths), max(lengths)
    width = max(1, math.ceil((top - low + 1) / HISTOGRAM_BINS))
    counts = [0] * ((top - low) // width + 1)
    for length in lengths:
        counts[(length - low) // width] += 1
    peak = max(counts)
    return [
        {
            "start": low + index * width,
            "end": low + (index + 1) * width - 1,
            "count": count,
            "height": count / peak,
            "truncated": low + (index + 1) * width - 1 > limit,
        }
        for index, count in enumerate(counts)
    ]
