"""The operator's command line: serve, create accounts, and incident tools (keys, db)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

import db.accounts
import db.api_keys
import db.audit
import db.engine
import db.migrate
from db import crypto
from db.engine import make_engine
from db.errors import KeyplaneError
from db.models import ApiKey
from db.settings import Settings, SettingsError
from db.timefmt import rfc3339

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
    serve.add_argument(
        "--plane",
        choices=["all", "data"],
        default="all",
        help="all: the whole API; data: verification and health only, to scale them apart",
    )

    create = commands.add_parser("create-account", help="create an account and its admin")
    create.add_argument("name")
    create.add_argument("--admin", required=True, metavar="USERNAME")

    keys = commands.add_parser("keys", help="API keys, for incidents").add_subparsers(
        dest="keys_command", required=True
    )
    keys_list = keys.add_parser("list", help="an account's keys as JSON lines, newest first")
    keys_list.add_argument("--account", type=int, required=True, metavar="ID")
    keys_revoke = keys.add_parser("revoke", help="revoke a key of any account")
    keys_revoke.add_argument("key_id", type=int, metavar="ID")

    database = commands.add_parser("db", help="the database schema").add_subparsers(
        dest="db_command", required=True
    )
    database.add_parser("upgrade", help="apply pending migrations")
    database.add_parser("current", help="the schema revision; exit 1 if behind")

    args = parser.parse_args(argv)
    try:
        # Only the server needs the secret (and, on SQLite, makes it on first start).
        settings = Settings.from_env(with_secret=args.command == "serve")
    except SettingsError as error:
        print(f"keyplane: {error}", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    try:
        return _run(args, engine, settings)
    except KeyplaneError as error:
        print(f"keyplane: {error.message}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _run(args: argparse.Namespace, engine: Engine, settings: Settings) -> int:
    if args.command == "db":
        if args.db_command == "upgrade":
            db.migrate.upgrade(engine)
        current, head = db.migrate.current_revision(engine), db.migrate.head_revision()
        print(json.dumps({"current": current, "head": head}))
        return 0 if current == head else 1
    if args.command == "keys":
        # Incident tools work on the schema as it is; they never migrate it.
        if args.keys_command == "list":
            return _list_keys(engine, args.account)
        return _revoke_key(engine, args.key_id)
    if args.command == "serve":
        return _serve(engine, settings, args.host, args.port, args.workers, args.plane)
    db.migrate.upgrade(engine)
    return _create_account(engine, settings, args.name, args.admin)


def _list_keys(engine: Engine, account_id: int) -> int:
    with Session(engine) as session:
        cursor: str | None = None
        while True:
            page = db.api_keys.page(
                session,
                db.api_keys.Scope(account_id),
                now=_now(),
                status=None,
                cursor=cursor,
                limit=100,
            )
            for key in page.items:
                print(json.dumps(_key_line(key)))
            if page.next_cursor is None:
                return 0
            cursor = page.next_cursor


def _revoke_key(engine: Engine, key_id: int) -> int:
    writing = db.engine.for_writing(engine)
    with Session(writing, expire_on_commit=False) as session, session.begin():
        key = db.api_keys.revoke(
            session, db.api_keys.Scope.everything(), key_id, db.audit.OPERATOR, _now()
        )
    print(json.dumps(_key_line(key)))
    return 0


def _key_line(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "account_id": key.account_id,
        "user_id": key.user_id,
        "key_prefix": key.key_prefix,
        "description": key.description,
        "status": key.status_at(_now()).value,
        "created_at": rfc3339(key.created_at),
        "expires_at": rfc3339(key.expires_at),
        "last_used_at": rfc3339(key.last_used_at),
    }


def _serve(
    engine: Engine, settings: Settings, host: str, port: int, workers: int, plane: str
) -> int:
    import uvicorn

    # Under the migration lock: of several servers started at once, one creates it.
    db.migrate.upgrade(engine, then=lambda connection: _bootstrap(connection, settings))
    engine.dispose()  # the workers build their own engines
    # Every worker writes its samples here, so any scrape sees them all. Set before
    # prometheus_client is imported anywhere (the workers inherit it).
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="keyplane-metrics-"))
    if settings.metrics.isdigit():
        from prometheus_client import start_http_server

        from handlers import metrics

        start_http_server(int(settings.metrics), addr=host, registry=metrics.registry())
    uvicorn.run(
        "keyplane.app:create_data_app" if plane == "data" else "keyplane.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # keyplane.requests writes one JSON line per request instead
        http="keyplane.protocol:HttpProtocol",  # with a limit on slow headers
        # Longer than load balancers keep idle connections (60 s on AWS's), so that the
        # server never closes one under a request that is already on its way.
        timeout_keep_alive=75,
        log_config=LOG_CONFIG,
    )
    return 0


def _bootstrap(connection: Connection, settings: Settings) -> None:
    """On an empty database, a default account and admin, so a newcomer can log in at once."""
    with Session(connection, expire_on_commit=False) as session:
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
    writing = db.engine.for_writing(engine)
    with Session(writing, expire_on_commit=False) as session, session.begin():
        account, user = db.accounts.create_with_admin(
            session, name, admin, crypto.hash_password(password), _now()
        )
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
