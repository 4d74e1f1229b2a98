"""A real Loraboard for tests: migrated database, Celery workers and the web server as processes.

Nothing is mocked: the workers consume from the real broker (the embedded SQLite
transport or Redis), write to the real database (SQLite or PostgreSQL), and the
server answers real HTTP on a free port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.paths import PROJECT_ROOT

POSTGRES_ADMIN_URL = "postgresql://root@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379"
# Every stack (and the in-process app, tests/conftest.py) runs with this admin key; test
# clients send it as a Bearer token, as the openai client does with api_key.
ADMIN_KEY = "lb-test-admin-key-for-the-test-stacks"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


def wait_until(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    """predicate's first truthy value, polled every 0.3 s; an AssertionError naming what after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_postgres_database() -> str:
    """A fresh database on the local server; returns its SQLAlchemy URL."""
    import psycopg  # only the PostgreSQL stacks need the driver

    name = f"loraboard_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://root@127.0.0.1:5432/{name}"


def drop_postgres_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Stack:
    data_dir: Path
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    base_url: str = ""
    headers: dict[str, str] = field(default_factory=lambda: dict(ADMIN_HEADERS))

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "app.migrate"],
            env=self.env,
            check=True,
            cwd=PROJECT_ROOT,
            capture_output=True,
        )

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, *args],
            env=self.env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def start_worker(self, role: str) -> subprocess.Popen[bytes]:
        return self.start(f"worker-{role}", "-m", "worker", role)

    def wait_for_workers(self, roles: tuple[str, ...], timeout: float = 120) -> None:
        """Until a worker of each role has announced itself (the server refuses chat with 503 before)."""
        from sqlalchemy import create_engine, text

        url = (
            self.env.get("LORABOARD_DATABASE_URL") or f"sqlite:///{self.data_dir.resolve() / 'loraboard.db'}"
        )
        engine = create_engine(url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with engine.connect() as connection:
                    names = [row[0] for row in connection.execute(text("SELECT name FROM workers"))]
                if all(any(name.startswith(f"{role}@") for name in names) for role in roles):
                    return
                time.sleep(0.3)
        finally:
            engine.dispose()
        raise RuntimeError(f"workers {roles} did not start; see {self.log_dir}")

    def start_server(self) -> None:
        port = free_port()
        self.env["LORABOARD_PORT"] = str(port)
        self.base_url = f"http://127.0.0.1:{port}"
        self.start("server", "-m", "app.cli", "serve")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/healthz", headers=ADMIN_HEADERS, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not start; see {self.log_dir / 'server.log'}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a process and its children (a prefork worker's pool child too)."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.processes):
            process = self.processes[name]
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name in list(self.processes):
            try:
                self.processes[name].wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(name)
        self.processes.clear()

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def make_stack(
    data_dir: Path, log_dir: Path, *, backend: str, shared_models_dir: Path | None = None
) -> Stack:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LORABOARD_")}
    env.update(
        LORABOARD_DATA_DIR=str(data_dir),
        LORABOARD_API_KEY=ADMIN_KEY,
        LORABOARD_HEARTBEAT_INTERVAL_S="2",
        LORABOARD_STALE_RUN_AFTER_S="20",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="2",
    )
    if backend == "postgres-redis":
        db_index = int(uuid.uuid4().int % 15) + 1
        env.update(
            LORABOARD_DATABASE_URL=create_postgres_database(),
            LORABOARD_BROKER_URL=f"{REDIS_URL}/{db_index}",
            LORABOARD_REDIS_URL=f"{REDIS_URL}/{db_index}",
        )
    log_dir.mkdir(parents=True, exist_ok=True)
    if shared_models_dir is not None:
        # The demo model is built once per test session and shared (it is deterministic).
        (data_dir / "models").parent.mkdir(parents=True, exist_ok=True)
        if not (data_dir / "models").exists():
            (data_dir / "models").symlink_to(shared_models_dir, target_is_directory=True)
    return Stack(data_dir=data_dir, env=env, log_dir=log_dir)
