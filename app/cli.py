"""`loraboard up`: migrate, then run the server, a training worker and an inference worker together.

This is what `make run` calls: one command, embedded defaults, no other server.
Ctrl-C stops all three; one that dies alone is restarted, with backoff (app/supervisor.py).
In production run them as separate services instead
(docker-compose.yml): `loraboard serve`, `python -m worker training`, `python -m worker inference`.
"""

from __future__ import annotations

import argparse
import sys

from app.config import get_settings


def serve() -> None:
    import uvicorn

    settings = get_settings()
    uvicorn.run("app.main:app", host=settings.host, port=settings.port, proxy_headers=True)


def up() -> int:
    from app.migrate import upgrade
    from app.supervisor import Child, supervise

    settings = get_settings()
    upgrade()
    url = f"http://{settings.host}:{settings.port}"
    print(f"\n  Loraboard: {url}  (API docs: {url}/docs; data in {settings.data_dir})\n", flush=True)
    return supervise(
        [
            Child("worker-training", [sys.executable, "-m", "worker", "training"]),
            Child("worker-inference", [sys.executable, "-m", "worker", "inference"]),
            Child("server", [sys.executable, "-m", "app.cli", "serve"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="loraboard")
    parser.add_argument("command", choices=["up", "serve", "migrate"])
    args = parser.parse_args()
    if args.command == "up":
        raise SystemExit(up())
    if args.command == "serve":
        serve()
    else:
        from app.migrate import upgrade

        upgrade()


if __name__ == "__main__":
    main()
