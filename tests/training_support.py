"""Helpers for the training tests: small trainers on the demo model, and spies on what they compute.

The demo model itself is tests/conftest.py's models_dir fixture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def six_step_trainer(model: Any, output_dir: Path, train_dataset: list, **arguments: Any) -> Any:
    """A transformers Trainer on CPU: 6 steps of 2 samples, no reports, no checkpoints."""
    from transformers import Trainer, TrainingArguments

    compute_loss_func = arguments.pop("compute_loss_func", None)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        max_steps=6,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        **arguments,
    )
    return Trainer(model=model, args=args, train_dataset=train_dataset, compute_loss_func=compute_loss_func)


def demo_sft_trainer(
    models_dir: Path, output_dir: Path, *, prepare_model: Any = None, **arguments: Any
) -> Any:
    """trl's SFTTrainer on the demo model (CPU), seeded, over prompt/completion samples.

    The prompt is masked out of the loss, so the labelled and the attended tokens differ,
    and the lengths differ, so the batches have padding. `arguments` override SFTConfig's.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    from core.run_config import DEMO_MODEL_ID
    from worker.training.model_loading import load_tokenizer

    set_seed(0)
    path = str(models_dir / DEMO_MODEL_ID)
    model = AutoModelForCausalLM.from_pretrained(path)
    if prepare_model is not None:
        model = prepare_model(model)
    samples = arguments.pop("samples", 24)
    data = Dataset.from_list(
        [{"prompt": "word " * (1 + i % 5), "completion": " answer" * (1 + i % 3)} for i in range(samples)]
    )
    defaults = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 4,
        "max_steps": 6,
        "logging_steps": 3,
        "learning_rate": 1e-3,
        "include_num_input_tokens_seen": "non_padding",
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "seed": 0,
        "dataloader_pin_memory": False,
    }
    return SFTTrainer(
        model=model,
        args=SFTConfig(**(defaults | arguments)),
        train_dataset=data,
        processing_class=load_tokenizer(path),
    )


def rows_scored_by_trls_head(monkeypatch: Any) -> list[int]:
    """The rows each call of trl's fused LM head scores, in call order, with trl's choice
    forced to what it does on a GPU (select the labelled positions; its kernels stay torch
    tiles on the CPU)."""
    import trl.trainer.utils as trl_utils

    rows: list[int] = []
    original_apply = trl_utils._ChunkedLogProbFunction.apply

    def counting_apply(hidden: Any, *args: Any) -> Any:
        rows.append(hidden.shape[0])
        return original_apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting_apply)
    monkeypatch.setattr(trl_utils, "_use_triton", lambda device: True)
    return rows


def note_each_training_batch(monkeypatch: Any, trainer: Any, note: Any) -> list:
    """note(inputs) for each batch `trainer` computes a loss on, in order."""
    notes: list = []
    original_compute_loss = type(trainer).compute_loss

    def noting(self: Any, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        notes.append(note(inputs))
        return original_compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(type(trainer), "compute_loss", noting)
    return notes


def sdpa_calls(monkeypatch: Any) -> list[tuple[Any, Any]]:
    """(attn_mask, is_causal) of every call of torch's scaled_dot_product_attention, in order."""
    import torch.nn.functional as F

    calls: list[tuple[Any, Any]] = []
    original_sdpa = F.scaled_dot_product_attention

    def noting_sdpa(*args: Any, **kwargs: Any) -> Any:
        calls.append((kwargs.get("attn_mask"), kwargs.get("is_causal")))
        return original_sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", noting_sdpa)
    return calls
