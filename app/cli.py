"""`loraboard up`: migrate, then run the server, a training worker and an inference worker together.

This is what `make run` calls: one command, embedded defaults, no other server.
Ctrl-C stops all three; one that dies alone is restarted, with backoff (app/supervisor.py).
In production run them as separate services instead
(docker-compose.yml): `loraboard serve`, `python -m worker training`, `python -m worker inference`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from app.config import get_settings


def serve() -> None:
    import uvicorn

    from app.auth import announce_first_start_key

    settings = get_settings()
    # Once, here, before uvicorn starts server_workers processes that would each make one.
    announce_first_start_key()
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        workers=settings.server_workers,
    )


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


def keys(args: argparse.Namespace) -> int:
    """loraboard keys create NAME [--user U] [--admin] | list | revoke KEY_ID"""
    from sqlmodel import Session

    from app import auth
    from app.db import get_engine
    from app.migrate import upgrade

    upgrade()
    with Session(get_engine()) as session:
        if args.action == "create":
            record, value = auth.make_key(session, args.name, args.user, is_admin=args.admin)
            print(f"{record.id}  user={record.user}{' (admin)' if record.is_admin else ''}")
            print(f"key (shown only now): {value}")
        elif args.action == "list":
            for record in auth.list_keys(session):
                state = "revoked" if record.revoked_at else "active"
                admin = " admin" if record.is_admin else ""
                print(f"{record.id}  {record.prefix}...  user={record.user}{admin}  {state}  {record.name}")
        elif not auth.revoke_key(session, args.name):
            print(f"no active key {args.name}", file=sys.stderr)
            return 1
    return 0


def prepare_models() -> int:
    """Prepare the built-in SmolLM2 in the Hugging Face cache now (a worker would on first use).

    The worker's code does it, in a process of its own, as `up` starts the workers: the
    server's package never imports the worker's.
    """
    return subprocess.call([sys.executable, "-m", "worker", "prepare-models"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="loraboard")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "serve", "migrate", "prepare-models"):
        commands.add_parser(name)
    key_parser = commands.add_parser("keys", help="create, list or revoke API keys")
    key_parser.add_argument("action", choices=["create", "list", "revoke"])
    key_parser.add_argument("name", nargs="?", default="cli", help="create: the key's name; revoke: its id")
    key_parser.add_argument("--user", default=auth_admin_user(), help="the user the key acts for")
    key_parser.add_argument("--admin", action="store_true", help="the key sees and manages everything")
    args = parser.parse_args()
    if args.command == "up":
        raise SystemExit(up())
    if args.command == "prepare-models":
        raise SystemExit(prepare_models())
    if args.command == "serve":
        serve()
    elif args.command == "keys":
        raise SystemExit(keys(args))
    else:
        from app.migrate import upgrade

        upgrade()


def auth_admin_user() -> str:
    from app.auth import ADMIN_USER

    return ADMIN_USER


if __name__ == "__main__":
    main()
