"""Where a run's model and data may come from: built-ins, uploaded files, hub ids, and
local paths under the roots the operator lists (Settings.allowed_local_roots) only.

Anyone who can submit a run must not be able to read the server's disk through it:
a path outside the roots is refused at submission with one message, whether or not
it exists, so nothing about the file (content, columns, existence) comes back.

A string shaped like a hub id ("org/name") is a hub id, unless a file or folder of that
name exists relative to the working directory: the libraries would read that local
copy instead of the hub, so it counts as a local path and must be under a root too.
"""

from __future__ import annotations

import re
from pathlib import Path

from app.config import get_settings
from app.errors import APIError
from core.run_config import DEMO_DATASET_ID, DEMO_MODEL_ID

# The hub's repository names: an optional namespace, then a name; letters, digits, '-', '_', '.'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")
BUILT_IN = {DEMO_MODEL_ID, DEMO_DATASET_ID}


def looks_like_hub_id(value: str) -> bool:
    return bool(_HUB_ID.match(value)) and ".." not in value


def allowed_local_path(value: str) -> Path | None:
    """The resolved path when value names a place under an allowed root, else None."""
    if "\x00" in value:
        return None
    try:
        resolved = Path(value).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an unknown ~user
        return None
    for root in get_settings().allowed_local_roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    return None


def _exists_locally(value: str) -> bool:
    try:
        return Path(value).expanduser().exists()
    except (OSError, ValueError):
        return False


def is_hub_reference(value: str) -> bool:
    """A hub id that no local file or folder shadows."""
    return looks_like_hub_id(value) and not _exists_locally(value)


def check_source(value: str, param: str, what: str) -> str:
    """The value to store for a model or dataset reference; APIError 400 when it may not be used.

    Local paths come back resolved, so the worker reads exactly the place that was checked.
    """
    if value in BUILT_IN or value.startswith("file-"):
        return value
    if is_hub_reference(value):
        return value
    local = allowed_local_path(value)
    if local is None:
        raise APIError(
            400,
            f"The {what} '{_shown(value)}' is not a hub id, and local paths are accepted only under the "
            "directories this server allows (<data dir>/local and LORABOARD_LOCAL_ROOTS).",
            param=param,
            code="source_not_allowed",
        )
    return str(local)


def _shown(value: str) -> str:
    # Echo what was sent, minus control characters (a newline would forge log lines).
    return "".join(char if char.isprintable() else "?" for char in value[:200])
