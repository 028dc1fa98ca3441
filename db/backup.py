"""Backups: a consistent copy of a live database, and a new database made from one.

SQLite: the online backup API (``sqlite3.Connection.backup``) copies every page in one
step under a read transaction, so the copy is the database at one moment while the
server goes on writing (WAL lets writers pass a reader). PostgreSQL: ``pg_dump``'s
custom format, which also reads one snapshot, and ``pg_restore`` into an empty
database in a single transaction, so a failed restore leaves nothing behind.

Neither copy holds the server secret, which is not in the database: keep it apart,
and give the restored database the same one, or no key verifies.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import URL

from keyplane.db.errors import Conflict, KeyplaneError


def backup(engine: Engine, target: Path) -> None:
    """A copy of the database at one moment, written to ``target`` (a new path), readable
    by its owner only: it holds password hashes and the audit trail."""
    _new_private_file(target, "a backup goes to a new path")
    try:
        if engine.dialect.name == "sqlite":
            _sqlite_copy(_sqlite_path(engine.url), target)
        else:
            _run_tool("pg_dump", engine.url, "--format=custom", "--file", str(target))
    except BaseException:
        target.unlink(missing_ok=True)  # never a half-written backup
        raise


def _new_private_file(path: Path, otherwise: str) -> None:
    """Create ``path``, empty and mode 0600, or say it exists (never overwritten)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise Conflict(f"{path} exists: {otherwise}") from None
    except OSError as error:
        raise KeyplaneError(f"cannot write {path}: {error.strerror}") from None


def restore(engine: Engine, source: Path) -> None:
    """Make the (new, empty) database of ``engine`` from the backup at ``source``."""
    if not source.is_file():
        raise KeyplaneError(f"no backup at {source}")
    if engine.dialect.name == "sqlite":
        target = _sqlite_path(engine.url)
        if not _is_keyplane_sqlite(source):
            raise KeyplaneError(f"{source} is not a backup of a Keyplane SQLite database")
        if target.exists() and not target.stat().st_size:
            target.unlink()  # an empty file is no database yet
        _new_private_file(target, "restore into a new database")
        try:
            _sqlite_copy(source, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return
    if inspect(engine).get_table_names():
        raise Conflict(f"the database {engine.url.database} is not empty: restore into a new one")
    _run_tool("pg_restore", engine.url, "--single-transaction", "--exit-on-error", str(source))


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise KeyplaneError("an in-memory database has nothing to back up or restore into")
    return Path(url.database)


def _sqlite_copy(source: Path, target: Path) -> None:
    """Copy in one step to a private draft beside ``target``, then move it into place
    (over the empty file made for it): a copy that failed half-way is never mistaken for
    a backup or a database."""
    draft = target.with_name(f".{target.name}.partial")
    draft.unlink(missing_ok=True)  # an earlier copy's, cut short
    _new_private_file(draft, "another copy is being made there")
    reading = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        writing = sqlite3.connect(draft)
        try:
            reading.backup(writing)  # pages=-1: all of them, from one read transaction
        finally:
            writing.close()
        os.replace(draft, target)
    except sqlite3.Error as error:
        raise KeyplaneError(f"cannot copy {source}: {error}") from None
    finally:
        reading.close()
        draft.unlink(missing_ok=True)


def _is_keyplane_sqlite(path: Path) -> bool:
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {"alembic_version", "api_keys"} <= {name for (name,) in tables}
        finally:
            connection.close()
    except sqlite3.Error:
        return False


def _run_tool(tool: str, url: URL, *arguments: str) -> None:
    """PostgreSQL's own client, told where to connect by libpq's variables (the password
    in the environment, never on a command line that ``ps`` shows)."""
    program = shutil.which(tool)
    if program is None:
        raise KeyplaneError(f"{tool} is not installed (Debian: apt-get install postgresql-client)")
    connection = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password,
        "PGDATABASE": url.database,
    }
    for name, value in url.query.items():
        if name in _LIBPQ_QUERY and isinstance(value, str):
            connection[_LIBPQ_QUERY[name]] = value
    environment = os.environ | {name: value for name, value in connection.items() if value}
    database = ["--dbname", url.database or ""]
    done = subprocess.run(  # noqa: S603 -- a fixed program, the operator's own URL
        [program, "--no-owner", "--no-privileges", *database, *arguments],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        said = (done.stderr.strip().splitlines() or ["no reason given"])[0]
        raise KeyplaneError(f"{tool} failed: {said}")


# The connection settings of a SQLAlchemy URL's query that libpq also reads from its
# environment.
_LIBPQ_QUERY = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "host": "PGHOST",
    "port": "PGPORT",
}
