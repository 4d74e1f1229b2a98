"""docker-compose.yml's health check of the server, run as the container runs it, against a real server.

/healthz answers only with a key (app/auth.py): the check must send the server's own.
"""

from __future__ import annotations

import json
import os
import subprocess

import yaml

from tests.stack import ADMIN_KEY, PROJECT_ROOT, Stack


def health_check(stack: Stack, key: str) -> subprocess.CompletedProcess[str]:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    kind, command = compose["services"]["server"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    # What compose hands the container's shell ($$ is one $), aimed at this test's server.
    command = command.replace("$$", "$").replace("http://127.0.0.1:8000", stack.base_url)
    return subprocess.run(
        ["sh", "-c", command],
        env={**os.environ, "LORABOARD_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_health_check_passes_with_the_servers_key_and_fails_without(stack_factory) -> None:
    stack: Stack = stack_factory("sqlite", workers=())
    passed = health_check(stack, ADMIN_KEY)
    assert passed.returncode == 0, passed.stderr
    assert json.loads(passed.stdout) == {"status": "ok"}
    assert health_check(stack, "lb-not-the-servers-key").returncode != 0
    assert health_check(stack, "").returncode != 0
