"""Access: API keys, dashboard sessions, CSRF, Origin and Host checks, ownership (issue 16, item 1).

In process against a real SQLite file; the keys are real rows made the way the CLI makes them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app import auth
from app.config import get_settings
from app.db import get_engine
from app.migrate import upgrade
from tests.stack import ADMIN_HEADERS, ADMIN_KEY

DEMO_JOB = {"model": "demo-tiny-llama", "training_file": "demo-antonyms"}
FORM = {"model_name": "demo-tiny-llama", "dataset": "demo-antonyms", "num_train_epochs": "1"}


@pytest.fixture(scope="module")
def app() -> Iterator[object]:
    upgrade()
    from app.main import app as application

    with TestClient(application):  # runs the lifespan once
        yield application


def anonymous(app: object) -> TestClient:
    return TestClient(app, follow_redirects=False)  # type: ignore[arg-type]


def bearer(app: object, key: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {key}"}, follow_redirects=False)  # type: ignore[arg-type]


def user_key(user: str) -> str:
    with Session(get_engine()) as session:
        return auth.make_key(session, f"{user}'s key", user)[1]


def test_nothing_answers_without_a_key(app: object) -> None:
    client = anonymous(app)
    for method, url in [
        ("GET", "/v1/fine_tuning/jobs"),
        ("POST", "/v1/files"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/healthz"),
    ]:
        response = client.request(method, url)
        assert response.status_code == 401, url
        assert response.json()["error"] == {
            "message": "Missing or invalid API key: send Authorization: Bearer <key>, or log in at /login.",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    page = client.get("/runs/new", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/runs/new"
    assert client.get("/login").status_code == 200
    assert client.get("/static/loraboard.css").status_code == 200
    assert bearer(app, "lb-made-up").get("/v1/files").status_code == 401
    assert bearer(app, ADMIN_KEY).get("/healthz").json() == {"status": "ok"}


def test_the_issues_cross_site_post_trains_nothing(app: object) -> None:
    jobs = bearer(app, ADMIN_KEY)
    # Compared by id: a running job that another module seeded reports a new ETA on each read.
    before = [job["id"] for job in jobs.get("/v1/fine_tuning/jobs").json()["data"]]
    attack = anonymous(app).post(
        "/runs/new", data={**FORM, "dataset_custom": "/some/dir"}, headers={"Origin": "http://evil.example"}
    )
    assert attack.status_code == 401
    assert [job["id"] for job in jobs.get("/v1/fine_tuning/jobs").json()["data"]] == before  # none queued


def test_a_session_needs_our_origin_and_the_csrf_token(app: object) -> None:
    client = anonymous(app)
    login = client.post(
        "/login", data={"key": ADMIN_KEY, "next": "/runs/new"}, headers={"Origin": "http://testserver"}
    )
    assert login.status_code == 303 and login.headers["location"] == "/runs/new"
    assert (
        "httponly" in login.headers["set-cookie"].lower()
        and "samesite=strict" in login.headers["set-cookie"].lower()
    )
    form_page = client.get("/runs/new")
    assert form_page.status_code == 200
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form_page.text).group(1)  # type: ignore[union-attr]
    assert f'"X-CSRF-Token": "{token}"' in form_page.text  # htmx sends it on every request

    cross_site = client.post(
        "/runs/new", data={**FORM, "csrf_token": token}, headers={"Origin": "http://evil.example"}
    )
    assert cross_site.status_code == 403 and cross_site.json()["error"]["code"] == "csrf_failed"
    no_token = client.post("/runs/new", data=FORM, headers={"Origin": "http://testserver"})
    assert no_token.status_code == 403
    launched = client.post(
        "/runs/new", data={**FORM, "csrf_token": token}, headers={"Origin": "http://testserver"}
    )
    assert launched.status_code == 303 and launched.headers["location"].startswith("/runs/ftjob-")
    # API writes need the key itself, not the cookie.
    assert (
        client.post(
            "/v1/fine_tuning/jobs", json=DEMO_JOB, headers={"Origin": "http://testserver"}
        ).status_code
        == 401
    )


def test_a_dashboard_session_logs_out_from_every_page(app: object) -> None:
    client = anonymous(app)
    client.post("/login", data={"key": user_key("carol")}, headers={"Origin": "http://testserver"})
    page = client.get("/datasets")
    logout = re.search(
        r'<form class="signout" method="post" action="/logout">\s*'
        r'<input type="hidden" name="csrf_token" value="([0-9a-f]+)">\s*'
        r'<span class="muted">carol</span> <button type="submit" class="link-button">Log out</button>',
        page.text,
    )
    assert logout is not None, page.text[:2000]
    assert "Log out" not in bearer(app, ADMIN_KEY).get("/datasets").text  # a script has no session
    out = client.post(
        "/logout", data={"csrf_token": logout.group(1)}, headers={"Origin": "http://testserver"}
    )
    assert out.status_code == 303 and out.headers["location"] == "/login"
    again = client.get("/datasets", headers={"accept": "text/html"})
    assert again.status_code == 303 and again.headers["location"] == "/login?next=/datasets"


def test_a_foreign_host_name_is_refused(app: object) -> None:
    response = bearer(app, ADMIN_KEY).get("/v1/files", headers={"Host": "rebound.evil.example"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_host"


def test_users_see_only_their_own_runs_files_and_adapters(app: object) -> None:
    alice, bob = bearer(app, user_key("alice")), bearer(app, user_key("bob"))
    upload = alice.post(
        "/v1/files", files={"file": ("a.jsonl", b'{"text": "a"}\n')}, data={"purpose": "fine-tune"}
    )
    file_id = upload.json()["id"]
    job = alice.post("/v1/fine_tuning/jobs", json={**DEMO_JOB, "training_file": file_id}).json()

    assert bob.get(f"/v1/fine_tuning/jobs/{job['id']}").status_code == 404
    assert bob.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").status_code == 404
    assert job["id"] not in {item["id"] for item in bob.get("/v1/fine_tuning/jobs").json()["data"]}
    assert bob.get(f"/v1/files/{file_id}").status_code == 404
    stolen = bob.post("/v1/fine_tuning/jobs", json={**DEMO_JOB, "training_file": file_id})
    assert stolen.status_code == 400 and stolen.json()["error"]["code"] == "file_not_found"
    assert bob.get(f"/runs/{job['id']}").status_code == 404

    assert alice.get(f"/v1/fine_tuning/jobs/{job['id']}").status_code == 200
    admin = bearer(app, ADMIN_KEY)
    assert job["id"] in {item["id"] for item in admin.get("/v1/fine_tuning/jobs").json()["data"]}
    admin.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    # Live streams share one poll per run: what alice's stream just read is not bob's to see.
    assert "event: done" in alice.get(f"/runs/{job['id']}/stream").text
    assert bob.get(f"/runs/{job['id']}/stream").status_code == 404
    assert bob.get("/runs/ftjob-nosuchrun/stream").status_code == 404


def test_a_revoked_key_stops_working(app: object) -> None:
    with Session(get_engine()) as session:
        record, value = auth.make_key(session, "short-lived", "carol")
    assert bearer(app, value).get("/v1/files").status_code == 200
    admin = TestClient(app, headers=ADMIN_HEADERS)  # type: ignore[arg-type]
    keys_page = admin.get("/keys")
    assert record.prefix in keys_page.text
    assert admin.post(f"/keys/{record.id}/revoke").status_code == 200
    assert bearer(app, value).get("/v1/files").status_code == 401


def revoke_with_the_cli(key_id: str) -> None:
    """`loraboard keys revoke ID` as an operator runs it: another process, its own database session."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "revoke", key_id],
        env=os.environ.copy(),  # the same data directory, so the same database
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_a_key_revoked_from_the_cli_fails_on_the_next_request(app: object) -> None:
    with Session(get_engine()) as session:
        record, value = auth.make_key(session, "leaked", "dave")
    api = bearer(app, value)
    dashboard = anonymous(app)
    login = dashboard.post("/login", data={"key": value}, headers={"Origin": "http://testserver"})
    assert login.status_code == 303
    # Both have been answered once (a cache of valid keys would now hold this one).
    assert api.get("/v1/files").status_code == 200
    assert dashboard.get("/runs/new").status_code == 200

    revoke_with_the_cli(record.id)

    assert api.get("/v1/files").status_code == 401
    assert dashboard.get("/v1/files").status_code == 401
    page = dashboard.get("/runs/new", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_the_first_start_makes_one_admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "api_key", None)
    with Session(get_engine()) as session:  # no admin key in the table yet
        for record in auth.list_keys(session):
            if record.is_admin:
                auth.revoke_key(session, record.id)
    first = auth.first_start_key()
    assert first is not None and first.startswith("lb-")
    assert auth.first_start_key() is None  # printed once: the next start makes none
    assert auth.principal_for_key(first) == auth.Principal(
        auth.principal_for_key(first).key_id,  # type: ignore[union-attr]
        "admin",
        True,
    )


def test_server_processes_starting_together_sign_with_one_secret(tmp_path: Path) -> None:
    """server_workers processes make the session secret at once: all must read the same one,
    never an empty or half-written file (a cookie one signs would fail in the others)."""
    path = tmp_path / "session-secret"
    for _attempt in range(20):
        path.unlink(missing_ok=True)
        starting = threading.Barrier(8)
        read: list[bytes] = []

        def start(starting: threading.Barrier, read: list[bytes]) -> None:
            starting.wait()
            read.append(auth.kept_secret(path))

        threads = [threading.Thread(target=start, args=(starting, read)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(read)) == 1 and len(read[0]) == 64, read
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert path.stat().st_mode & 0o777 == 0o600
