"""Training data: load records from wherever they are, render them into trl-ready examples.

Every format becomes either {"prompt", "completion"} (the loss is on the completion
only: trl's completion_only_loss) or {"text"} (already templated, the loss on all of
it). Chats are rendered with the tokenizer's chat template when it has one, else
with the Llama-2 template:

    <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST] ...

The prompt renderer is shared with inference (render_chat_prompt), so a chat with
the adapter sees exactly the text it was trained on. Multi-turn chats are one
sample each: the earlier turns are context, the loss is on the last answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.demo_dataset import demo_dataset_path
from core.formats import SUPPORTED_EXTENSIONS, DatasetSummary, read_records, validate_records
from core.run_config import DEMO_DATASET_ID

if TYPE_CHECKING:
    from datasets import Dataset

    from core.run_config import RunConfig

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


# --- loading ---------------------------------------------------------------------


def load_records(
    source: str, declared_format: str = "auto", split: str = "train"
) -> tuple[list[dict], DatasetSummary]:
    """Records and their validated summary from a local file, a local dir, the demo id or a hub id."""
    if source == DEMO_DATASET_ID:
        records = read_records(demo_dataset_path("train" if split == "train" else "heldout"))
    elif Path(source).is_file() and Path(source).suffix.lower() in SUPPORTED_EXTENSIONS:
        records = read_records(Path(source))
    else:
        # A local directory, or a hub id resolved through the hub's cache (worker/training/hub.py)
        # so that it works offline and fails with a clear message. A validation source without
        # a "validation" split gives its "train" split.
        from datasets import load_dataset

        from app.config import get_settings
        from worker.training.hub import hub_snapshot

        directory = (
            source
            if Path(source).is_dir()
            else hub_snapshot(source, repo_type="dataset", token=get_settings().hub_token(), param="dataset")
        )
        splits = load_dataset(str(directory))
        records = (splits[split] if split in splits else splits["train"]).to_list()
    return records, validate_records(records, declared_format)


# --- rendering ---------------------------------------------------------------------


def render_examples(records: list[dict], dataset_format: str, tokenizer: Any) -> list[dict[str, str]]:
    """One trl example per record: {"prompt", "completion"} or {"text"}."""
    render = {
        "messages": lambda record: _render_messages(record["messages"], tokenizer),
        "prompt_completion": lambda record: {"prompt": record["prompt"], "completion": record["completion"]},
        "instruction": _render_instruction,
        # Text written out with its own <s> (guanaco-llama2-1k): one BOS, not two.
        "text": lambda record: {"text": _strip_leading_bos(record["text"], tokenizer)},
    }[dataset_format]
    return [render(record) for record in records]


def render_chat_prompt(messages: list[dict], tokenizer: Any) -> str:
    """The conversation up to the assistant's next reply, ready for generation.

    messages: optional system, then user/assistant turns, ending with a user turn.
    Training renders a chat's prompt with this very function.
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = _llama2_prompt(messages, tokenizer)
    return _strip_leading_bos(text, tokenizer)


def _render_messages(messages: list[dict], tokenizer: Any) -> dict[str, str]:
    prompt = render_chat_prompt(messages[:-1], tokenizer)
    answer = messages[-1]["content"]
    if getattr(tokenizer, "chat_template", None):
        full = _strip_leading_bos(tokenizer.apply_chat_template(messages, tokenize=False), tokenizer)
        if full.startswith(prompt):
            # Whatever the template puts after the answer (an end-of-turn token) is learned too.
            return {"prompt": prompt, "completion": full[len(prompt) :]}
        return {"prompt": prompt, "completion": answer + tokenizer.eos_token}
    return {"prompt": prompt, "completion": f" {answer} {tokenizer.eos_token}"}


def _llama2_prompt(messages: list[dict], tokenizer: Any) -> str:
    """Llama-2 chat: `<s>[INST] user [/INST] answer </s>` per exchange; the open one ends at [/INST]."""
    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    text = ""
    for index in range(0, len(turns), 2):
        user = turns[index]["content"]
        if index == 0 and system is not None:
            user = f"<<SYS>>\n{system}\n<</SYS>>\n\n{user}"
        text += f"{bos}[INST] {user} [/INST]"
        if index + 1 < len(turns):
            text += f" {turns[index + 1]['content']} {eos}"
    return text


def _render_instruction(record: dict) -> dict[str, str]:
    context = (record.get("input") or "").strip()
    template = ALPACA_PROMPT_WITH_INPUT if context else ALPACA_PROMPT
    return {
        "prompt": template.format(instruction=record["instruction"], input=context),
        "completion": record["output"],
    }


def _strip_leading_bos(text: str, tokenizer: Any) -> str:
    """Drop a leading <s> from the text when the tokenizer adds one itself (no double BOS)."""
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        return text[len(bos) :]
    return text


def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


# --- datasets for the trainer -------------------------------------------------------


def build_datasets(
    train_source: str, validation_source: str | None, config: RunConfig, tokenizer: Any
) -> tuple[Dataset, Dataset | None, DatasetSummary]:
    """The train and eval datasets (rendered), and the training data's summary.

    Eval: the validation source when given, else a seeded eval_fraction split of the
    training records, else none.
    """
    from datasets import Dataset

    records, summary = load_records(train_source, config.dataset_format)
    train = Dataset.from_list(render_examples(records, summary.format, tokenizer))
    evaluation = None
    if validation_source:
        eval_records, eval_summary = load_records(
            validation_source, config.dataset_format, split="validation"
        )
        evaluation = Dataset.from_list(render_examples(eval_records, eval_summary.format, tokenizer))
    elif config.eval_fraction > 0:
        parts = train.train_test_split(test_size=config.eval_fraction, seed=config.seed)
        train, evaluation = parts["train"], parts["test"]
    return train, evaluation, summary
