"""The in-process app for the tests under tests/app: a migrated SQLite database, the admin key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.migrate import upgrade
from tests.stack import ADMIN_HEADERS


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """A client of the app as the admin, its lifespan run once per test module."""
    upgrade()
    from app.main import app

    with TestClient(app, headers=ADMIN_HEADERS) as test_client:
        yield test_client
