"""A small Hugging Face hub on loopback, for tests of downloads through the real huggingface_hub.

It answers the calls snapshot_download makes (repo info, the file tree, HEAD and GET of
each file) for repositories made of local directories, plus a gated one and unknown
ones, with the headers the hub sends (X-Repo-Commit, X-Linked-Etag, X-Error-Code).
Files are sent in slices with a pause between them, so that a download takes long
enough to be watched.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

# What tests/conftest.py's loopback_hub serves: the demo model, public and, to a token only, gated.
SERVED_MODEL = "acme/tiny-llama"
SERVED_MODEL_COMMIT = "a" * 40
GATED_MODEL = "acme/gated-llama"
GATED_MODEL_COMMIT = "b" * 40


@dataclass
class HubRepo:
    folder: Path
    commit: str
    gated: bool = False

    def files(self) -> dict[str, Path]:
        return {str(p.relative_to(self.folder)): p for p in sorted(self.folder.rglob("*")) if p.is_file()}


@dataclass
class LoopbackHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    slice_bytes: int = 256 * 1024
    pause_s: float = 0.02
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> LoopbackHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:  # keep the test output quiet
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, send_body=False)

            def do_GET(self) -> None:
                hub.answer(self, send_body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def answer(self, request: BaseHTTPRequestHandler, send_body: bool) -> None:
        parts = [unquote(part) for part in urlparse(request.path).path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) == 4:  # model_info: public metadata, gated or not
            repo = self.repos.get("/".join(parts[2:4]))
            if repo is None:
                self._error(request, 404, "RepoNotFound", "Repository not found")
            else:
                self._json(
                    request, {"id": "/".join(parts[2:4]), "sha": repo.commit, "gated": repo.gated and "auto"}
                )
            return
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo_id, action = "/".join(parts[2:4]), parts[4]
            repo = self._repo_or_error(request, repo_id)
            if repo is None:
                return
            if action == "revision":
                siblings = [{"rfilename": name} for name in repo.files()]
                self._json(
                    request, {"id": repo_id, "sha": repo.commit, "siblings": siblings, "private": False}
                )
            elif action == "tree":
                tree = [
                    {"type": "file", "path": name, "size": path.stat().st_size, "oid": _sha1(path)}
                    for name, path in repo.files().items()
                ]
                self._json(request, tree)
            else:
                self._error(request, 404, "EntryNotFound", "no such API route")
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo_or_error(request, "/".join(parts[:2]))
            if repo is None:
                return
            path = repo.files().get("/".join(parts[4:]))
            if path is None:
                self._error(request, 404, "EntryNotFound", "no such file")
                return
            data = path.read_bytes()
            request.send_response(200)
            request.send_header("X-Repo-Commit", repo.commit)
            request.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            if send_body:
                for start in range(0, len(data), self.slice_bytes):
                    request.wfile.write(data[start : start + self.slice_bytes])
                    time.sleep(self.pause_s)
            return
        self._error(request, 404, "EntryNotFound", "unknown route")

    def _repo_or_error(self, request: BaseHTTPRequestHandler, repo_id: str) -> HubRepo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(request, 404, "RepoNotFound", f"Repository {repo_id} not found")
        elif repo.gated and "authorization" not in {key.lower() for key in request.headers}:
            self._error(request, 401, "GatedRepo", f"Access to model {repo_id} is restricted")
        else:
            return repo
        return None

    @staticmethod
    def _json(request: BaseHTTPRequestHandler, body: object) -> None:
        payload = json.dumps(body).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    @staticmethod
    def _error(request: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        payload = json.dumps({"error": message}).encode()
        request.send_response(status)
        request.send_header("X-Error-Code", code)
        request.send_header("X-Error-Message", message)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()
