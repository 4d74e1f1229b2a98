"""`loraboard up` keeps going when one of its children dies (issue 16, item 9).

The real command, its real children (server, training and inference workers) on the
embedded defaults; one child is killed with SIGKILL, as the kernel's OOM killer would.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx

from tests.paths import ARTIFACTS
from tests.stack import ADMIN_HEADERS, free_port, make_stack, wait_until


def healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", headers=ADMIN_HEADERS, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_dead_child_is_restarted_and_the_rest_keep_running(tmp_path: Path, shared_models_dir: Path) -> None:
    stack = make_stack(
        tmp_path / "data",
        ARTIFACTS / "logs" / "up-restarts",
        backend="sqlite",
        shared_models_dir=shared_models_dir,
    )
    (stack.log_dir / "up.log").unlink(missing_ok=True)  # the pids below must be this run's
    port = free_port()
    stack.env["LORABOARD_PORT"] = str(port)
    base_url = f"http://127.0.0.1:{port}"
    stack.start("up", "-m", "app.cli", "up")
    try:
        wait_until(lambda: healthy(base_url), 90, "the server")

        def started(name: str) -> list[int]:
            return [int(pid) for pid in re.findall(rf"started {name} \(pid (\d+)\)", stack.log("up"))]

        first = wait_until(lambda: started("worker-inference"), 30, "the inference worker")[0]
        os.kill(first, signal.SIGKILL)
        log = wait_until(lambda: len(started("worker-inference")) == 2 and stack.log("up"), 30, "the restart")
        assert f"worker-inference (pid {first}) exited with code -9; restarting in 1 s" in log
        second = started("worker-inference")[1]
        assert second != first
        os.kill(second, 0)  # alive
        assert healthy(base_url), "the server stopped with its neighbour"
        assert "stopped" not in log
    finally:
        stack.stop()
