"""Several server processes on one port (LORABOARD_SERVER_WORKERS), as a shared box runs them.

The real `loraboard serve` on a fresh data dir with no admin key set: its processes start
together, yet the first start prints one admin key, and a dashboard login made through any
process holds on every other (they sign sessions with one secret).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from tests.paths import ARTIFACTS
from tests.stack import free_port, make_stack, wait_until

PROCESSES = 3


def test_server_processes_share_one_first_start_key_and_every_login(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "data", ARTIFACTS / "logs" / "server-workers", backend="sqlite")
    (stack.log_dir / "server.log").unlink(missing_ok=True)
    del stack.env["LORABOARD_API_KEY"]  # a first start: the server makes the admin key
    stack.env["LORABOARD_SERVER_WORKERS"] = str(PROCESSES)
    port = free_port()
    stack.env["LORABOARD_PORT"] = str(port)
    base_url = f"http://127.0.0.1:{port}"
    stack.migrate()
    stack.start("server", "-m", "app.cli", "serve")
    try:
        log = wait_until(
            lambda: (
                stack.log("server").count("Application startup complete") >= PROCESSES and stack.log("server")
            ),
            120,
            f"{PROCESSES} server processes",
        )
        assert len(set(re.findall(r"Started server process \[(\d+)\]", log))) == PROCESSES
        keys = re.findall(r"it is not shown again\):\s+(lb-\S+)", log)
        assert len(keys) == 1, log
        links = re.findall(r"Log in: (http://\S+)", log)
        assert links == [f"http://127.0.0.1:{port}/login?key={keys[0]}"]
        engine = create_engine(f"sqlite:///{(tmp_path / 'data' / 'loraboard.db').resolve()}")
        with engine.connect() as connection:
            admins = connection.execute(text("SELECT COUNT(*) FROM api_keys WHERE is_admin")).scalar()
        engine.dispose()
        assert admins == 1

        login = httpx.get(links[0])  # the printed link, as a person clicks it
        assert login.status_code == 303, login.text
        cookies = login.cookies
        # One new connection per request: the kernel hands them to all the processes.
        for _ in range(30):
            with httpx.Client(base_url=base_url, cookies=cookies) as browser:
                page = browser.get("/", headers={"accept": "text/html"})
            assert page.status_code == 200, f"{page.status_code} {page.headers.get('location')}"
            assert 'href="/" aria-current="page">Runs</a>' in page.text  # the runs page, not the login
        with httpx.Client(base_url=base_url) as script:
            jobs = script.get("/v1/fine_tuning/jobs", headers={"Authorization": f"Bearer {keys[0]}"})
        assert jobs.status_code == 200 and jobs.json()["data"] == []
    finally:
        stack.stop()
