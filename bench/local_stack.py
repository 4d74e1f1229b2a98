"""A Loraboard of the bench's own: migrated SQLite database and broker under one data dir, the
web server and one training worker as processes, as `loraboard up` runs them.

The bench owns the data dir: it reads the adapter's files there and the worker's logs.
Compile caches (Inductor, Triton) are pointed at a folder of the bench's choosing, so that
a "cold" run starts from an empty one and a "warm" run finds what the cold run compiled.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180.0  # a first import of torch on a cold disk can take a minute


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalStack:
    data_dir: Path
    compile_cache_dir: Path
    local_roots: list[Path]
    api_key: str = field(default_factory=lambda: "lb-bench-" + secrets.token_hex(16))
    cpus: frozenset[int] | None = None
    """CPU cores the server and the worker run on (Linux), and every process they start; None: any."""
    worker_cpus: frozenset[int] | None = None
    """The training worker's own cores, where they are not `cpus`: keeps a CPU-bound run (no GPU)
    off the server's cores, as a GPU keeps it on a real training host."""
    server_workers: int = 1
    """The server's processes (LORABOARD_SERVER_WORKERS)."""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    base_url: str = ""

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("LORABOARD_")}
        env.update(
            LORABOARD_DATA_DIR=str(self.data_dir),
            LORABOARD_API_KEY=self.api_key,
            LORABOARD_SERVER_WORKERS=str(self.server_workers),
            LORABOARD_LOCAL_ROOTS="[" + ", ".join(f'"{root}"' for root in self.local_roots) + "]",
            # Where the worker keeps them by default (app/config.py, compile_cache_dir), named
            # here so that no cache set in the machine's environment is shared between phases.
            TORCHINDUCTOR_CACHE_DIR=str(self.compile_cache_dir / "torchinductor"),
            TRITON_CACHE_DIR=str(self.compile_cache_dir / "triton"),
            HF_HUB_OFFLINE="1",  # the model and the data are local: nothing may be fetched
            PYTHONUNBUFFERED="1",
        )
        # The project first on the path (the device's copy runs from its root), keeping
        # what the caller added (.gpu-deps there).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        if self.base_url:
            env["LORABOARD_PORT"] = self.base_url.rsplit(":", 1)[1]
        return env

    def start(self) -> None:
        """Migrate, then the server and a training worker; returns once both answer."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "app.migrate"],
            env=self.env(),
            cwd=PROJECT_ROOT,
            check=True,
            capture_output=True,
        )
        self.base_url = f"http://127.0.0.1:{free_port()}"
        self._spawn("server", "-m", "app.cli", "serve")
        self.start_worker()
        self._wait_for_server()
        self._wait_for_validation()

    def start_worker(self) -> None:
        """A fresh training worker (its task runs in a fresh child process, as always)."""
        self._spawn("worker", "-m", "worker", "training")

    def restart_worker(self) -> None:
        self._stop("worker")
        self.start_worker()

    def wait_for_worker(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the training worker has announced itself in the database."""
        from sqlalchemy import create_engine, text

        engine = create_engine(f"sqlite:///{self.data_dir.resolve() / 'loraboard.db'}")
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                self._check_alive()
                with engine.connect() as connection:
                    names = [row[0] for row in connection.execute(text("SELECT name FROM workers"))]
                if any(name.startswith("training@") for name in names):
                    return
                time.sleep(0.2)
        finally:
            engine.dispose()
        raise RuntimeError(f"the training worker did not start; see {self.log_dir / 'worker.log'}")

    def stop(self) -> None:
        for name in list(self.processes):
            self._stop(name)

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def server_process_ids(self) -> list[int]:
        """The processes answering on the port, as uvicorn logs their start (server_workers of them)."""
        path = self.log_dir / "server.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return sorted({int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", text)})

    def cpus_of(self, name: str) -> frozenset[int] | None:
        """The cores the process called name is pinned to (None: any)."""
        if name == "worker" and self.worker_cpus is not None:
            return self.worker_cpus
        return self.cpus

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        cpus = self.cpus_of(name)
        self.processes[name] = subprocess.Popen(
            [sys.executable, *args],
            env=self.env(),
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its pool child too
            # Set in the child before it runs Python: every thread and process it makes inherits it.
            preexec_fn=None if cpus is None else functools.partial(os.sched_setaffinity, 0, cpus),
        )

    def _stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)

    def _wait_for_validation(self) -> None:
        """The server validates a run config against transformers' optimizer names, which it
        imports in the background after starting: a job refused for its optimizer means the
        import is done, so the first real submission is not timed with it."""
        body = {
            "model": "demo-tiny-llama",
            "training_file": "demo-antonyms",
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": {"optim": "no-such-optimizer"}},
            },
        }
        response = httpx.post(
            f"{self.base_url}/v1/fine_tuning/jobs", json=body, headers=self.headers, timeout=120
        )
        if response.status_code != 400 or "optimizer" not in response.text:
            raise RuntimeError(
                f"the server's validation answered {response.status_code}: {response.text[:500]}"
            )

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}:\n{self.log_tail(name)}")

    def _wait_for_server(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if httpx.get(f"{self.base_url}/healthz", headers=self.headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start; see {self.log_dir / 'server.log'}")
