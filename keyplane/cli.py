"""The operator's command line: ``keyplane serve`` and ``keyplane create-account``."""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

import db.accounts
import db.migrate
from db.engine import make_engine
from keyplane import crypto
from keyplane.errors import KeyplaneError
from keyplane.settings import Settings, SettingsError

# Applied by uvicorn in every worker: request lines (JSON) on stdout, the rest on stderr.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json_line": {"format": "%(message)s"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json_line",
            "stream": "ext://sys.stdout",
        },
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "text",
            "stream": "ext://sys.stderr",
        },
    },
    "loggers": {
        "keyplane.requests": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "keyplane": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
DEFAULT_ACCOUNT = "default"
DEFAULT_ADMIN = "admin"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keyplane", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="migrate the database and serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)

    create = commands.add_parser("create-account", help="create an account and its admin")
    create.add_argument("name")
    create.add_argument("--admin", required=True, metavar="USERNAME")

    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"keyplane: {error}", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    db.migrate.upgrade(engine)
    if args.command == "serve":
        return _serve(engine, settings, args.host, args.port, args.workers)
    return _create_account(engine, settings, args.name, args.admin)


def _serve(engine: Engine, settings: Settings, host: str, port: int, workers: int) -> int:
    import uvicorn

    _bootstrap(engine, settings)
    engine.dispose()  # the workers build their own engines
    uvicorn.run(
        "keyplane.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # keyplane.requests writes one JSON line per request instead
        log_config=LOG_CONFIG,
    )
    return 0


def _bootstrap(engine: Engine, settings: Settings) -> None:
    """On an empty database, a default account and admin, so a newcomer can log in at once."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        if db.accounts.any_exist(session):
            return
        password = settings.admin_password or secrets.token_urlsafe(18)
        account, _ = db.accounts.create_with_admin(
            session, DEFAULT_ACCOUNT, DEFAULT_ADMIN, crypto.hash_password(password), _now()
        )
    shown = "(from KEYPLANE_ADMIN_PASSWORD)" if settings.admin_password else password
    print(
        f"keyplane: created account {account.id} '{DEFAULT_ACCOUNT}' with admin "
        f"'{DEFAULT_ADMIN}', password: {shown}  (shown once: keep it)",
        file=sys.stderr,
    )


def _create_account(engine: Engine, settings: Settings, name: str, admin: str) -> int:
    password = settings.admin_password or _prompt_password()
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            account, user = db.accounts.create_with_admin(
                session, name, admin, crypto.hash_password(password), _now()
            )
    except KeyplaneError as error:
        print(f"keyplane: {error.message}", file=sys.stderr)
        return 1
    print(json.dumps({"account_id": account.id, "user_id": user.id}))
    return 0


def _now() -> datetime:
    return datetime.now(UTC)


def _prompt_password() -> str:
    # A pipe (scripts, tests) gives the password on one line; a terminal is asked.
    if sys.stdin.isatty():
        password = getpass.getpass("Admin password: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise SystemExit("keyplane: the password needs at least 8 characters")
    return password


if __name__ == "__main__":
    raise SystemExit(main())
