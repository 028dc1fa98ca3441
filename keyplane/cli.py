"""The operator's command line: serve, accounts, people, incident tools (keys, db).

Built on click: ``keyplane --help`` and ``keyplane COMMAND --help`` say everything.
Errors are one line on stderr (``keyplane: ...``) and a non-zero exit: 1 for what the
command was asked to do (an unknown account, a missing database), 2 for its usage or
configuration. What a script reads, ``--json`` prints as JSON (one object per line
for lists); otherwise the output is for people.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import jsonschema
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from keyplane import __version__, db
from keyplane.db import crypto
from keyplane.db.engine import make_engine
from keyplane.db.errors import KeyplaneError, NotFound
from keyplane.db.models import Account, Role, User, key_status
from keyplane.db.timefmt import parse_rfc3339, rfc3339
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


class Failure(click.ClickException):
    """What the command was asked to do failed: one line on stderr, exit 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"keyplane: {self.message}", err=True)


class BadSetup(Failure):
    """The configuration or an input the command needs is wrong: exit 2."""

    exit_code = 2


@dataclass
class Operator:
    """What every command but ``serve`` works with: the settings and the database."""

    settings: Settings
    engine: Engine

    @contextlib.contextmanager
    def session(self, *, writes: bool = False) -> Iterator[Session]:
        """One transaction, committed when the block ends without an error."""
        engine = db.engine.for_writing(self.engine) if writes else self.engine
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session

    def user(self, session: Session, username: str) -> User:
        user = db.users.by_username(session, username)
        if user is None:
            raise NotFound(f"No user named {username!r}")
        return user

    def account(self, session: Session, account_id: int) -> Account:
        return db.accounts.get(session, account_id)

    def user_and_account(self, session: Session, username: str, account_id: int) -> User:
        """The user, once the account is known to exist (an unknown one is said first)."""
        self.account(session, account_id)
        return self.user(session, username)


def _settings(with_secret: bool = False) -> Settings:
    try:
        return Settings.from_env(with_secret=with_secret)
    except SettingsError as error:
        raise BadSetup(str(error)) from None


@contextlib.contextmanager
def _operator(*, existing: bool) -> Iterator[Operator]:
    """``existing``: the command reads or changes what is there; a SQLite file that
    does not exist is then an error, never a new empty database."""
    settings = _settings()
    url = make_url(settings.database_url)
    if existing and url.get_backend_name() == "sqlite":
        path = url.database
        if path and path != ":memory:" and not Path(path).exists():
            raise Failure(
                f"no database at {Path(path).resolve()} (KEYPLANE_DATABASE_URL); "
                "create one with `keyplane db upgrade` or `keyplane serve`"
            )
    with _database(settings) as engine:
        yield Operator(settings, engine)


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[Engine]:
    """An engine for the command; what fails in it is one line (``Failure``), never a
    traceback."""
    engine = make_engine(settings.database_url, transaction_pooler=settings.db_pooler != "none")
    try:
        yield engine
    except KeyplaneError as error:
        raise Failure(error.message) from None
    except DBAPIError as error:
        raise Failure(_database_trouble(engine, error)) from None
    finally:
        engine.dispose()


def _database_trouble(engine: Engine, error: DBAPIError) -> str:
    """Why the database did not answer, in one line (never the statement or its values)."""
    try:
        current, head = db.migrate.current_revision(engine), db.migrate.head_revision()
    except DBAPIError:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else "no answer"
        return f"cannot use the database: {reason}"
    if current != head:
        return f"the database is at revision {current}, not {head}: run `keyplane db upgrade`"
    return f"the database refused the command: {type(error.orig).__name__}"


def operator_command(*, existing: bool = True) -> Callable[[Callable[..., Any]], Any]:
    """A command that gets an ``Operator`` as its first argument, errors as one line."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            with _operator(existing=existing) as operator:
                return command(operator, **kwargs)

        return run

    return decorate


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(data) if as_json else text)


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
ACCOUNT_OPTION = click.option("--account", "account_id", type=int, required=True, metavar="ID")
ROLES = click.Choice([role.value for role in Role])
T = TypeVar("T")


class CommandLine(click.Group):
    """Click's usage errors (an unknown option, a missing argument) as one line, exit 2,
    like every other error of the command line."""

    def main(self, args: Sequence[str] | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            code = super().main(args, standalone_mode=False, **kwargs)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx else "keyplane"
            message = error.format_message().rstrip(".")
            click.echo(f"keyplane: {message} (see `{where} --help`)", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("keyplane: stopped", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=CommandLine, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", message="keyplane %(version)s")
def main() -> None:
    """Keyplane's operator command line (KEYPLANE_DATABASE_URL picks the database)."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--plane",
    type=click.Choice(["all", "data"]),
    default="all",
    show_default=True,
    help="all: the whole API; data: verification and health only, to scale them apart.",
)
def serve(host: str, port: int, workers: int, plane: str) -> None:
    """Migrate the database and serve the API (Swagger UI at /ui/)."""
    _port_free(host, port)
    # Only the server needs the secret (and, on SQLite, makes it on first start).
    _admin_password(_settings())  # before a secret or a database is made for it
    settings = _settings(with_secret=True)
    with _database(settings) as engine:
        _serve(engine, settings, host, port, workers, plane)


@main.command("create-account")
@click.argument("name")
@click.option("--admin", "admin", required=True, metavar="USERNAME", help="The first admin.")
@JSON_OPTION
@operator_command()
def create_account(operator: Operator, name: str, admin: str, as_json: bool) -> None:
    """Create an account and its first admin (password: KEYPLANE_ADMIN_PASSWORD, else asked)."""
    password = _admin_password(operator.settings) or _new_password("Admin password")
    with operator.session(writes=True) as session:
        account, user = db.accounts.create_with_admin(
            session, name, admin, crypto.hash_password(password), _now()
        )
    _emit(
        as_json,
        {"account_id": account.id, "user_id": user.id},
        f"created account {account.id} {name!r} with admin {admin!r} (user {user.id})",
    )


@main.group()
def accounts() -> None:
    """Accounts (each made by `keyplane create-account`, or the first `serve`)."""


@accounts.command("list")
@JSON_OPTION
@operator_command()
def list_accounts(operator: Operator, as_json: bool) -> None:
    """Every account, oldest first, with its number of members."""
    with operator.session() as session:
        for account, members in db.accounts.every(session):
            line = {
                "id": account.id,
                "name": account.name,
                "members": members,
                "created_at": rfc3339(account.created_at),
            }
            _emit(as_json, line, f"{account.id}  {account.name}  {members} member(s)")


@main.group()
def keys() -> None:
    """API keys of any account, for incidents (they never migrate the database)."""


@keys.command("list")
@ACCOUNT_OPTION
@JSON_OPTION
@operator_command()
def list_keys(operator: Operator, account_id: int, as_json: bool) -> None:
    """An account's keys, newest first."""
    with operator.session() as session:
        operator.account(session, account_id)
        cursor: str | None = None
        while True:
            page = db.api_keys.page(
                session,
                db.api_keys.Scope(account_id),
                now=_now(),
                cursor=cursor,
                limit=100,
            )
            for key in page.items:
                line = _key_line(key)
                _emit(as_json, line, _key_text(line))
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


@keys.command("revoke")
@click.argument("key_id", type=int, metavar="ID")
@JSON_OPTION
@operator_command()
def revoke_key(operator: Operator, key_id: int, as_json: bool) -> None:
    """Revoke a key of any account, at once and for good (audited as the operator)."""
    with operator.session(writes=True) as session:
        key = db.api_keys.revoke(session, db.api_keys.Caller.operator(), key_id, _now())
    line = _key_line(key)
    _emit(as_json, line, "revoked " + _key_text(line))


@main.command()
@ACCOUNT_OPTION
@click.option("--key", "key_id", type=int, metavar="ID", help="One key's verifies only.")
@click.option("--external-id", metavar="ID", help="One customer's keys only.")
@click.option("--tag", metavar="KEY=VALUE", help="Verifies that carried this tag only.")
@click.option("--from", "start", metavar="TIME", help="RFC 3339; default 24 h (30 days) ago.")
@click.option("--to", "end", metavar="TIME", help="RFC 3339; default the current bucket's end.")
@click.option(
    "--granularity", type=click.Choice(["hour", "day"]), default="hour", show_default=True
)
@click.option(
    "--by",
    "group_by",
    default="code",
    show_default=True,
    metavar="DIMENSIONS",
    help="Comma-separated, of key_id, external_id, code, tag.",
)
@JSON_OPTION
@operator_command()
def usage(
    operator: Operator,
    account_id: int,
    key_id: int | None,
    external_id: str | None,
    tag: str | None,
    start: str | None,
    end: str | None,
    granularity: str,
    group_by: str,
    as_json: bool,
) -> None:
    """An account's verifies, counted by hour or day (as GET /v1/usage counts them)."""
    dimensions = tuple(dict.fromkeys(group_by.split(",")))
    if not set(dimensions) <= set(db.usage.DIMENSIONS):
        raise BadSetup(f"--by takes {', '.join(db.usage.DIMENSIONS)}")
    until = _moment(end, "--to") or db.usage.end_of_bucket(_now(), granularity)
    since = _moment(start, "--from") or db.usage.before(until, db.usage.DEFAULT_SPAN[granularity])
    if since >= until:
        raise BadSetup("--from must be before --to")
    question = db.usage.Question(
        since, until, granularity, dimensions, key_id, external_id, tag, limit=100_000
    )
    with operator.session() as session:
        operator.account(session, account_id)
        buckets, _ = db.usage.report(session, account_id, question)
    columns = ["time", *dimensions, "count"]
    rows = [{c: getattr(b, c) for c in columns} | {"time": rfc3339(b.time)} for b in buckets]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    table = [columns] + [["-" if row[c] is None else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    if not rows:
        click.echo("(no verifies counted)")


def _moment(value: str | None, option: str) -> datetime | None:
    try:
        return parse_rfc3339(value, [option])
    except KeyplaneError as error:
        raise BadSetup(f"{option}: {error}") from None


@main.group()
def users() -> None:
    """People: passwords, roles, membership, deactivation (each audited as the operator)."""


@users.command("list")
@ACCOUNT_OPTION
@JSON_OPTION
@operator_command()
def list_users(operator: Operator, account_id: int, as_json: bool) -> None:
    """An account's members, in the order they joined."""
    with operator.session() as session:
        operator.account(session, account_id)
        for user, membership in db.accounts.members(session, account_id):
            line = {
                "id": user.id,
                "username": user.username,
                "role": membership.role.value,
                "active": user.is_active,
                "joined_at": rfc3339(membership.created_at),
            }
            state = "" if user.is_active else "  (deactivated)"
            _emit(as_json, line, f"{user.id}  {user.username}  {membership.role.value}{state}")


@users.command("set-password")
@click.argument("username")
@operator_command()
def set_password(operator: Operator, username: str) -> None:
    """Set a user's password (asked, or one line on stdin); every token of theirs ends."""
    with operator.session() as session:
        user_id = operator.user(session, username).id
    password_hash = crypto.hash_password(_new_password("New password"))
    with operator.session(writes=True) as session:
        db.users.set_password(
            session,
            user_id,
            password_hash,
            actor=db.audit.OPERATOR,
            action="user.password_reset",
            now=_now(),
        )
    click.echo(f"set the password of {username!r}; their earlier tokens no longer work")


@users.command("add")
@click.argument("username")
@ACCOUNT_OPTION
@click.option("--role", type=ROLES, default="member")
@operator_command()
def add_user(operator: Operator, username: str, account_id: int, role: str) -> None:
    """Add an existing user to an account (their keys there stay as they were: a removed
    member's keys stay off)."""
    _membership(operator, username, account_id, db.accounts.add_member, Role(role))
    click.echo(f"added {username!r} to account {account_id} as {role}")


@users.command("set-role")
@click.argument("username")
@ACCOUNT_OPTION
@click.option("--role", type=ROLES, required=True)
@operator_command()
def set_role(operator: Operator, username: str, account_id: int, role: str) -> None:
    """Make a member admin, or an admin member (an account keeps at least one admin)."""
    _membership(operator, username, account_id, db.accounts.set_role, Role(role))
    click.echo(f"{username!r} is {role} of account {account_id}")


@users.command("remove")
@click.argument("username")
@ACCOUNT_OPTION
@operator_command()
def remove_user(operator: Operator, username: str, account_id: int) -> None:
    """Remove a user from an account; their keys there are switched off at once."""
    disabled = _membership(operator, username, account_id, db.accounts.remove_member)
    click.echo(f"removed {username!r} from account {account_id}; switched off {disabled} keys")


def _membership(
    operator: Operator, username: str, account_id: int, change: Callable[..., T], *args: Any
) -> T:
    """A change to a user's membership of an account, made and audited as the operator."""
    with operator.session(writes=True) as session:
        user = operator.user_and_account(session, username, account_id)
        return change(session, account_id, user.id, *args, actor=db.audit.OPERATOR, now=_now())


@users.command("deactivate")
@click.argument("username")
@operator_command()
def deactivate_user(operator: Operator, username: str) -> None:
    """Sign a user out everywhere for good: tokens end, keys in every account go off."""
    with operator.session(writes=True) as session:
        user = operator.user(session, username)
        disabled = db.accounts.set_user_active(session, user, False, now=_now())
    click.echo(f"deactivated {username!r}; switched off {disabled} keys")


@users.command("activate")
@click.argument("username")
@operator_command()
def activate_user(operator: Operator, username: str) -> None:
    """Let a deactivated user sign in again (their keys stay off until turned on)."""
    with operator.session(writes=True) as session:
        db.accounts.set_user_active(session, operator.user(session, username), True, now=_now())
    click.echo(f"activated {username!r}")


@main.group("db")
def database() -> None:
    """The database schema."""


@database.command()
@JSON_OPTION
@operator_command(existing=False)
def upgrade(operator: Operator, as_json: bool) -> None:
    """Create or migrate the database to the newest schema."""
    db.migrate.upgrade(operator.engine)
    _revision(operator, as_json)


@database.command()
@JSON_OPTION
@operator_command()
def current(operator: Operator, as_json: bool) -> None:
    """The schema's revision; exit 1 if it is behind."""
    _revision(operator, as_json)


@database.command()
@click.argument("revision")
@JSON_OPTION
@operator_command()
def downgrade(operator: Operator, revision: str, as_json: bool) -> None:
    """Undo the schema's migrations after REVISION (rolling back one version)."""
    if revision == "base":
        raise BadSetup("`base` would drop every table: to start afresh, drop the database")
    db.migrate.downgrade(operator.engine, revision)
    now, head = db.migrate.current_revision(operator.engine), db.migrate.head_revision()
    _emit(as_json, {"current": now, "head": head}, f"schema revision {now}")


@database.command()
@click.argument("path", type=click.Path(path_type=Path))
@operator_command()
def backup(operator: Operator, path: Path) -> None:
    """Copy the database, as it is at one moment, to PATH (safe while serving)."""
    _not_through_a_pooler(operator.settings)
    db.backup.backup(operator.engine, path)
    click.echo(f"backed up to {path}; the server secret is not in it: keep it apart")


@database.command()
@click.argument("path", type=click.Path(path_type=Path))
@operator_command(existing=False)
def restore(operator: Operator, path: Path) -> None:
    """Make the database (a new, empty one) from the backup at PATH."""
    _not_through_a_pooler(operator.settings)
    db.backup.restore(operator.engine, path)
    revision = db.migrate.current_revision(operator.engine)
    click.echo(f"restored from {path}: schema revision {revision}")


def _not_through_a_pooler(settings: Settings) -> None:
    """pg_dump and pg_restore change their session's settings, which a transaction
    pooler would leave on a server connection for Keyplane's next transaction."""
    if settings.db_pooler != "none":
        raise BadSetup(
            "back up and restore on PostgreSQL itself, not through the pooler: run this "
            "with KEYPLANE_DATABASE_URL on PostgreSQL's own port and KEYPLANE_DB_POOLER unset"
        )


def _revision(operator: Operator, as_json: bool) -> None:
    now, head = db.migrate.current_revision(operator.engine), db.migrate.head_revision()
    state = "current" if now == head else f"behind (the newest is {head})"
    _emit(as_json, {"current": now, "head": head}, f"schema revision {now}: {state}")
    if now != head:
        raise SystemExit(1)


def _key_line(key: db.api_keys.Shown) -> dict[str, object]:
    return {
        "id": key.id,
        "account_id": key.account_id,
        "user_id": key.user_id,
        "key_prefix": key.key_prefix,
        "description": key.description,
        "external_id": key.external_id,
        "status": key_status(key, _now()).value,
        "created_at": rfc3339(key.created_at),
        "expires_at": rfc3339(key.expires_at),
        "last_used_at": rfc3339(key.last_used_at),
    }


def _key_text(line: dict[str, object]) -> str:
    return (
        f"{line['id']}  {line['key_prefix']}  {line['status']:<8}  user {line['user_id']}  "
        f"{line['description'] or ''}"
    )


def _new_password(prompt: str) -> str:
    # A pipe (scripts, tests) gives the password on one line; a terminal is asked twice.
    if sys.stdin.isatty():
        password = str(click.prompt(prompt, hide_input=True, confirmation_prompt=True))
    else:
        password = sys.stdin.readline().rstrip("\n")
    return _obeys_the_api(password, "the password")


def _admin_password(settings: Settings) -> str | None:
    """KEYPLANE_ADMIN_PASSWORD, checked before anything is created with it."""
    if settings.admin_password is None:
        return None
    return _obeys_the_api(settings.admin_password, "KEYPLANE_ADMIN_PASSWORD")


def _obeys_the_api(password: str, what: str) -> str:
    """The API's rule for a new password (the spec's ``NewPassword``), for the operator too."""
    from keyplane.app import spec_schema

    rule = spec_schema("NewPassword")
    if not jsonschema.Draft4Validator(rule).is_valid(password):
        raise BadSetup(
            f"{what} needs {rule['minLength']} to {rule['maxLength']} characters, none of them NUL"
        )
    return password


def _port_free(host: str, port: int) -> None:
    """Fail at once, in one line, when something else listens on the port: a caller waiting
    for Keyplane there would otherwise talk to it."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        reason = "is in use" if error.errno == errno.EADDRINUSE else f"cannot be used: {error}"
        raise Failure(f"{host}:{port} {reason}") from None


def _serve(
    engine: Engine, settings: Settings, host: str, port: int, workers: int, plane: str
) -> None:
    # Under the migration lock: of several servers started at once, one creates it.
    db.migrate.upgrade(engine, then=lambda connection: _bootstrap(connection, settings))
    engine.dispose()  # the workers build their own engines
    with contextlib.ExitStack() as cleanup:
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            # Every worker writes its samples here, so any scrape sees them all; set
            # before prometheus_client is imported anywhere (the workers inherit it),
            # and removed when the server stops.
            samples = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="keyplane-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = samples
            # uvicorn re-raises SIGTERM once it has shut down; exit through here then,
            # so that the folder goes too (SIGINT already arrives as KeyboardInterrupt).
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        _run_server(settings, host, port, workers, plane)


def _run_server(settings: Settings, host: str, port: int, workers: int, plane: str) -> None:
    import uvicorn

    if settings.metrics.isdigit():
        from prometheus_client import start_http_server

        from keyplane.handlers import metrics

        start_http_server(int(settings.metrics), addr=host, registry=metrics.registry())
    uvicorn.run(
        "keyplane.app:create_data_app" if plane == "data" else "keyplane.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # the request log (keyplane/requestlog.py) writes one JSON line instead
        http="keyplane.protocol:HttpProtocol",  # with a limit on slow headers
        # Longer than load balancers keep idle connections (60 s on AWS's), so that the
        # server never closes one under a request that is already on its way.
        timeout_keep_alive=75,
        log_config=LOG_CONFIG,
        # X-Forwarded-For and -Proto from the configured proxies only (uvicorn would
        # otherwise believe any local process): the client address the request log,
        # the audit trail and the login throttle see is never one a client made up.
        proxy_headers=bool(settings.trusted_proxies),
        # As networks: uvicorn would take "10.0.0.1/8" for a name that matches nothing.
        forwarded_allow_ips=[
            str(ipaddress.ip_network(proxy, strict=False)) for proxy in settings.trusted_proxies
        ]
        or None,
    )


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


def _now() -> datetime:
    return datetime.now(UTC)


if __name__ == "__main__":
    main(prog_name="keyplane")
