"""Whether a run's base model can be loaded, said at submission where it can be known.

Torch-free and quick: the built-in ids, a local directory with a config.json, a hub id
already in the Hugging Face cache pass at once. A hub id that is not cached is looked
up on the hub with a short timeout: unknown, or gated without a token, is a 400 now
rather than a failed run later. What only the download can tell (no access to a
gated repo despite a token, too little disk) is said when the run starts
(worker/training/hub.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from app.config import get_settings
from app.errors import APIError
from core.model_catalog import BUILTIN_MODELS

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$|^[A-Za-z0-9][\w.-]{0,95}$")
LOOKUP_TIMEOUT_S = 5.0


def check_model_available(model_name: str, param: str = "model") -> None:
    """Raise a 400 APIError if model_name can be known now not to load."""
    if model_name in BUILTIN_MODELS:
        return
    local = Path(model_name).expanduser()
    if local.is_dir() or model_name.startswith(("/", ".", "~")):
        if not (local / "config.json").is_file():
            raise APIError(
                400, "The model is neither a built-in model, a hub id nor a model directory", param=param
            )
        return
    if not HUB_ID.fullmatch(model_name):
        raise APIError(400, f"'{model_name}' is not a hub model id (organisation/name)", param=param)
    _check_hub_model(model_name, param)


def _check_hub_model(repo_id: str, param: str) -> None:
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    if constants.HF_HUB_OFFLINE:
        raise APIError(
            400,
            f"'{repo_id}' is not in this server's Hugging Face cache and HF_HUB_OFFLINE is set",
            param=param,
            code="model_not_found",
        )
    token = get_settings().hub_token()
    try:
        info = HfApi().model_info(repo_id, token=token, timeout=LOOKUP_TIMEOUT_S)
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise APIError(
            400,
            f"No model '{repo_id}' on the hub (or it is private: set LORABOARD_HF_TOKEN to a token "
            "that may read it)",
            param=param,
            code="model_not_found",
        ) from error
    except Exception as error:  # the hub cannot be reached (no network, a timeout, an outage)
        raise APIError(
            400,
            f"'{repo_id}' is not in this server's Hugging Face cache and the hub cannot be reached",
            param=param,
            code="model_not_found",
        ) from error
    if info.gated and token is None:
        raise APIError(
            400,
            f"'{repo_id}' is gated: accept its terms on the hub and set LORABOARD_HF_TOKEN",
            param=param,
            code="model_gated",
        )
