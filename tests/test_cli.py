"""The operator CLI, run as a user would: ``keyplane create-account`` and ``keyplane serve``."""

from __future__ import annotations

import json
import re
import socket
import stat
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from keyplane.db.crypto import Secrets
from keyplane.db.engine import make_engine
from keyplane.db.models import Account, ApiKey, AuditEvent, Role, User
from keyplane.db.permissions import VERIFY
from tests.conftest import TEST_SECRET
from tests.factories import Factory
from tests.servers import KEYPLANE, create_account, keyplane_env, serving, wait_until_up

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser


def test_create_account_needs_a_database_and_prints_ids(db_kind, fresh_database_url):
    """Only `db upgrade` and `serve` create a database: on a new one, create-account says
    what to run and leaves nothing behind."""
    first = _keyplane(fresh_database_url, "create-account", "acme", "--admin", "alice")
    assert first.returncode == 1
    assert first.stderr.count("\n") == 1 and "`keyplane db upgrade`" in first.stderr
    _assert_nothing_created(db_kind, fresh_database_url)

    assert _keyplane(fresh_database_url, "db", "upgrade").returncode == 0
    result = _keyplane(fresh_database_url, "create-account", "acme", "--admin", "alice", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"account_id": 1, "user_id": 1}

    again = subprocess.run(
        [*KEYPLANE, "create-account", "other", "--admin", "alice"],
        env=keyplane_env(fresh_database_url),
        input="another-password\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1
    assert again.stderr == "keyplane: Username already taken\n"
    for name, says in (
        ("ALICE", "keyplane: Username already taken\n"),
        ("al1ce", "keyplane: Username looks like 'alice', already taken\n"),
        ("bob@3", "keyplane: A service-wide username cannot end in @ and digits"),
    ):
        refused = subprocess.run(
            [*KEYPLANE, "create-account", "other", "--admin", name],
            env=keyplane_env(
                fresh_database_url, KEYPLANE_ADMIN_PASSWORD="a-password-of-some-length"
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode == 1, name
        assert refused.stderr.startswith(says), refused.stderr


def test_without_a_secret_sqlite_keeps_a_generated_one_and_a_server_database_refuses(
    db_kind, fresh_database_url
):
    """No secret printed anywhere is ever accepted: there is no default to forge with."""
    if db_kind == "postgresql":
        result = subprocess.run(
            [*KEYPLANE, "serve"],
            env=keyplane_env(fresh_database_url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1
        assert "KEYPLANE_SECRET_KEY is not set" in result.stderr
        return
    secret_file = Path(make_url(fresh_database_url).database + ".secret")
    tokens = []
    for _ in range(2):  # the second start reuses the first's secret
        with serving(keyplane_env(fresh_database_url, KEYPLANE_ADMIN_PASSWORD=PASSWORD)) as (
            base,
            _,
        ):
            wait_until_up(base)
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
            tokens.append(_login(base))
            assert _me(base, tokens[0]).status_code == 200
            forged = Secrets.derive(OLD_PRINTED_SECRET).issue_user_token(1, timedelta(hours=1))
            assert _me(base, forged).status_code == 401


def test_a_short_secret_is_refused(fresh_database_url):
    result = subprocess.run(
        [*KEYPLANE, "serve"],
        env=keyplane_env(fresh_database_url, KEYPLANE_SECRET_KEY="too-short"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "at least 32 bytes" in result.stderr


def test_a_previous_secret_is_accepted_while_it_is_configured(fresh_database_url):
    old, new = "the-old-server-secret-" + "o" * 20, "the-new-server-secret-" + "n" * 20
    env = keyplane_env(
        fresh_database_url, KEYPLANE_SECRET_KEY=old, KEYPLANE_ADMIN_PASSWORD=PASSWORD
    )
    with serving(env) as (base, _):
        wait_until_up(base)
        token = _login(base)
        auth = {"Authorization": f"Bearer {token}"}
        full_key = httpx.post(f"{base}/v1/api-keys", json={}, headers=auth).json()["full_key"]
        made = httpx.post(f"{base}/v1/api-keys", json={"permissions": [VERIFY]}, headers=auth)
        verifier = {"Authorization": f"Bearer {made.json()['full_key']}"}  # outlives the token
    rotated = env | {"KEYPLANE_SECRET_KEY": new, "KEYPLANE_PREVIOUS_SECRET_KEYS": old}
    with serving(rotated) as (base, _):
        wait_until_up(base)
        assert _me(base, token).status_code == 200
        assert (
            _verify(base, full_key, verifier) == "VALID"
        )  # and its digest is renewed with the new secret
        time.sleep(6)  # the flusher writes the renewal within its 5 s period
    with serving(env | {"KEYPLANE_SECRET_KEY": new}) as (base, _):
        wait_until_up(base)
        assert _me(base, token).status_code == 401  # the old secret's tokens are gone
        assert _verify(base, full_key, verifier) == "VALID"  # the key moved to the new secret


PASSWORD = "cli-admin-password-1"
# The value the development default used to be: printed in the repository's history.
OLD_PRINTED_SECRET = "keyplane-development-secret-do-not-use-in-production"


def _login(base: str) -> str:
    form = {"grant_type": "password", "username": "admin", "password": PASSWORD}
    response = httpx.post(f"{base}/v1/auth/token", data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _me(base: str, token: str) -> httpx.Response:
    return httpx.get(f"{base}/v1/users/me", headers={"Authorization": f"Bearer {token}"})


def _verify(base: str, full_key: str, verifier: dict[str, str]) -> str:
    answer = httpx.post(f"{base}/v1/keys/verify", json={"key": full_key}, headers=verifier)
    return str(answer.json()["code"])


def test_first_serve_creates_a_default_admin_who_can_log_in(fresh_database_url):
    with serving(keyplane_env(fresh_database_url, KEYPLANE_SECRET_KEY=TEST_SECRET)) as (
        base,
        server,
    ):
        password = _read_bootstrap_password(server)
        wait_until_up(base)
        token = httpx.post(
            f"{base}/v1/auth/token",
            data={"grant_type": "password", "username": "admin", "password": password},
        )
        assert token.status_code == 200
        me = httpx.get(
            f"{base}/v1/users/me",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        assert me.json()["accounts"] == [{"id": 1, "name": "default", "role": "admin"}]


def _read_bootstrap_password(server: subprocess.Popen[str]) -> str:
    assert server.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        match = re.search(r"password: (\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError("keyplane serve printed no admin password")


def _keyplane(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYPLANE, *args],
        env=keyplane_env(database_url, KEYPLANE_ADMIN_PASSWORD="alice-password-1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_current_and_upgrade(db_kind, fresh_database_url):
    behind = _keyplane(fresh_database_url, "db", "current", "--json")
    assert behind.returncode == 1
    if db_kind == "sqlite":  # no file yet: said, and none is made
        assert behind.stdout == ""
        assert behind.stderr.startswith("keyplane: no database at ")
        assert not Path(make_url(fresh_database_url).database).exists()
    else:  # an empty database
        assert json.loads(behind.stdout)["current"] is None
    upgraded = _keyplane(fresh_database_url, "db", "upgrade", "--json")
    assert upgraded.returncode == 0
    status = json.loads(upgraded.stdout)
    assert status["current"] == status["head"] is not None
    text = _keyplane(fresh_database_url, "db", "current")
    assert (text.returncode, text.stdout) == (0, f"schema revision {status['head']}: current\n")

    # Rolling back one version: the newer code undoes its own migration, keeping the data.
    assert (
        _keyplane(fresh_database_url, "create-account", "acme", "--admin", "alice").returncode == 0
    )
    previous = f"{int(status['head']) - 1:04d}"
    down = _keyplane(fresh_database_url, "db", "downgrade", previous, "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout) == {"current": previous, "head": status["head"]}
    assert _keyplane(fresh_database_url, "db", "current").returncode == 1  # behind now
    unknown = _keyplane(fresh_database_url, "db", "downgrade", "9999")
    assert (unknown.returncode, unknown.stderr) == (
        1,
        "keyplane: no schema revision '9999' (`keyplane db current` shows it)\n",
    )
    above = _keyplane(fresh_database_url, "db", "downgrade", status["head"])
    assert above.returncode == 1 and above.stderr.startswith(
        f"keyplane: cannot go down to {status['head']}: "
    )
    assert above.stderr.count("\n") == 1
    everything = _keyplane(fresh_database_url, "db", "downgrade", "base")
    assert (everything.returncode, everything.stderr.count("\n")) == (2, 1)
    assert _keyplane(fresh_database_url, "db", "current").returncode == 1  # still there
    assert _keyplane(fresh_database_url, "db", "upgrade").returncode == 0
    listed = _keyplane(fresh_database_url, "accounts", "list", "--json")
    assert '"acme"' in listed.stdout  # the data outlived the round trip


def test_keys_list_and_revoke_for_incidents(fresh_database_url):
    create_account(keyplane_env(fresh_database_url, KEYPLANE_ADMIN_PASSWORD="alice-password-1"))
    engine = make_engine(fresh_database_url)
    factory = Factory.from_engine(engine, Secrets.derive("any-secret-for-this-test-000000000"))
    with Session(engine) as session:
        account, user = session.get(Account, 1), session.get(User, 1)
    first, _ = factory.api_key(user, account, description="one")
    second, _ = factory.api_key(user, account, description="two")

    listed = _keyplane(fresh_database_url, "keys", "list", "--account", "1", "--json")
    assert listed.returncode == 0
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(k["id"], k["description"], k["status"]) for k in lines] == [
        (second.id, "two", "active"),
        (first.id, "one", "active"),
    ]

    revoked = _keyplane(fresh_database_url, "keys", "revoke", str(first.id), "--json")
    assert revoked.returncode == 0
    assert json.loads(revoked.stdout)["status"] == "revoked"
    assert factory.stored_key(first.id).revoked_at is not None
    with Session(engine) as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "key.revoked")).one()
        assert (event.actor_type, event.target_id) == ("operator", str(first.id))

    missing = _keyplane(fresh_database_url, "keys", "revoke", "999")
    assert (missing.returncode, missing.stderr) == (1, "keyplane: API key not found\n")
    unknown = _keyplane(fresh_database_url, "keys", "list", "--account", "999")
    assert (unknown.returncode, unknown.stderr) == (1, "keyplane: No account with id 999\n")
    text = _keyplane(fresh_database_url, "keys", "list", "--account", "1")
    assert text.stdout.splitlines()[0].startswith(f"{second.id}  ")
    engine.dispose()


COMMANDS = [
    [],
    ["serve"],
    ["create-account"],
    ["accounts"],
    ["accounts", "list"],
    ["keys"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["users"],
    ["users", "list"],
    ["users", "set-password"],
    ["users", "add"],
    ["users", "set-role"],
    ["users", "remove"],
    ["users", "deactivate"],
    ["users", "activate"],
    ["db"],
    ["db", "upgrade"],
    ["db", "current"],
]


def test_every_command_has_help(fresh_database_url):
    for command in COMMANDS:
        result = _keyplane(fresh_database_url, *command, "--help")
        assert result.returncode == 0, command
        assert result.stdout.startswith("Usage: keyplane"), command
        summary = result.stdout.split("\n\n")[1].strip()
        assert len(summary) > 15, (command, summary)


def test_errors_are_one_line_and_never_a_traceback(fresh_database_url):
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
    url = "KEYPLANE_DATABASE_URL"
    says = {
        "not a URL": "keyplane: KEYPLANE_DATABASE_URL is not a database URL (sqlite:///PATH",
        "MySQL": "keyplane: KEYPLANE_DATABASE_URL names 'mysql'; Keyplane runs on sqlite or",
        "psycopg2": "keyplane: KEYPLANE_DATABASE_URL names the driver 'psycopg2'; Keyplane uses",
        "unknown option": "keyplane: No such option '--bogus' (see `keyplane keys list --help`)",
        "unknown command": "keyplane: No such command 'bogus' (see `keyplane --help`)",
        "missing option": "keyplane: Missing option '--account' (see `keyplane users list",
        "bad value": "keyplane: Invalid value for '--account': 'x' is not a valid integer",
    }
    cases = [
        (["keys", "list", "--account", "1"], {url: unreachable}, 1, "keyplane: cannot use"),
        (["keys", "list", "--account", "1"], {url: "nonsense"}, 2, says["not a URL"]),
        (["accounts", "list"], {url: "mysql://root@127.0.0.1/keyplane"}, 2, says["MySQL"]),
        (["serve"], {url: "postgresql+psycopg2://postgres@127.0.0.1/x"}, 2, says["psycopg2"]),
        (["keys", "list", "--bogus"], {}, 2, says["unknown option"]),
        (["bogus"], {}, 2, says["unknown command"]),
        (["users", "list"], {}, 2, says["missing option"]),
        (["keys", "list", "--account", "x"], {}, 2, says["bad value"]),
        (["users", "remove", "nobody", "--account", "1"], {}, 1, "keyplane: No account with"),
        (["serve"], {"KEYPLANE_SECRET_KEY": "short"}, 2, "keyplane: KEYPLANE_SECRET_KEY"),
    ]
    _keyplane(fresh_database_url, "db", "upgrade")
    for args, extra, code, start in cases:
        result = subprocess.run(
            [*KEYPLANE, *args],
            env=keyplane_env(fresh_database_url) | extra,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.count("\n") == 1, (args, result.stderr)
        assert result.stderr.startswith(start), (args, result.stderr)


def test_serve_on_a_port_in_use_says_so_at_once(fresh_database_url):
    """Whatever listens there is never taken for Keyplane: serve stops before it starts."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = _keyplane(fresh_database_url, "serve", "--port", str(port))
    assert (result.returncode, result.stderr) == (1, f"keyplane: 127.0.0.1:{port} is in use\n")
    assert time.monotonic() - started < 10


def test_a_password_from_the_environment_or_stdin_obeys_the_api(db_kind, fresh_database_url):
    """The API's rule (8 to 1024 characters) for the operator too: `short` creates nothing."""
    refused = _run_with(fresh_database_url, ["serve"], KEYPLANE_ADMIN_PASSWORD="short")
    assert (refused.returncode, refused.stderr) == (
        2,
        "keyplane: KEYPLANE_ADMIN_PASSWORD needs 8 to 1024 characters, none of them NUL\n",
    )
    _assert_nothing_created(db_kind, fresh_database_url)

    assert _keyplane(fresh_database_url, "db", "upgrade").returncode == 0
    rule = "8 to 1024 characters, none of them NUL"
    for password in ("short", "x" * 1025):
        asked = _run(fresh_database_url, "create-account", "acme", "--admin", "al", stdin=password)
        assert asked.returncode == 2, password
        assert asked.stderr == f"keyplane: the password needs {rule}\n"
    create = ["create-account", "acme", "--admin", "al"]
    from_env = _run_with(fresh_database_url, create, KEYPLANE_ADMIN_PASSWORD="short")
    assert from_env.returncode == 2
    assert _keyplane(fresh_database_url, "accounts", "list").stdout == ""
    taken = _run(fresh_database_url, "create-account", "acme", "--admin", "al", stdin="x" * 1024)
    assert taken.returncode == 0, taken.stderr


def test_accounts_and_users_are_listed_for_the_operator(fresh_database_url):
    env = keyplane_env(fresh_database_url, KEYPLANE_ADMIN_PASSWORD="alice-password-1")
    create_account(env, "acme", "alice")
    create_account(env, "globex", "gina")
    assert _run(fresh_database_url, "users", "add", "gina", "--account", "1").returncode == 0
    _run(fresh_database_url, "users", "deactivate", "gina")

    listed = _keyplane(fresh_database_url, "accounts", "list", "--json")
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(a["id"], a["name"], a["members"]) for a in lines] == [(1, "acme", 2), (2, "globex", 1)]
    text = _keyplane(fresh_database_url, "accounts", "list").stdout
    assert text == "1  acme  2 member(s)\n2  globex  1 member(s)\n"

    members = _keyplane(fresh_database_url, "users", "list", "--account", "1", "--json")
    seen = [json.loads(line) for line in members.stdout.splitlines()]
    assert [(m["username"], m["role"], m["active"]) for m in seen] == [
        ("alice", "admin", True),
        ("gina", "member", False),
    ]
    text = _keyplane(fresh_database_url, "users", "list", "--account", "1").stdout
    assert text.splitlines()[1].endswith("gina  member  (deactivated)")
    unknown = _keyplane(fresh_database_url, "users", "list", "--account", "9")
    assert (unknown.returncode, unknown.stderr) == (1, "keyplane: No account with id 9\n")


def _run_with(database_url: str, argv: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYPLANE, *argv],
        env=keyplane_env(database_url, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_nothing_created(db_kind: str, database_url: str) -> None:
    """No file on SQLite (nor its secret); no table on PostgreSQL."""
    if db_kind == "sqlite":
        path = Path(make_url(database_url).database)
        assert list(path.parent.glob(path.name + "*")) == []
    else:
        engine = make_engine(database_url)
        try:
            assert inspect(engine).get_table_names() == []
        finally:
            engine.dispose()


def test_a_read_command_never_creates_a_database(tmp_path, db_kind):
    if db_kind != "sqlite":
        pytest.skip("a missing database file is SQLite's")
    missing = tmp_path / "elsewhere" / "keyplane.db"
    missing.parent.mkdir()
    for command in (
        ["keys", "list", "--account", "1"],
        ["keys", "revoke", "1"],
        ["db", "current"],
        ["accounts", "list"],
        ["users", "list", "--account", "1"],
        ["create-account", "acme", "--admin", "alice"],
    ):
        result = _keyplane(f"sqlite:///{missing}", *command)
        assert result.returncode == 1, command
        assert f"no database at {missing}" in result.stderr
        assert list(missing.parent.iterdir()) == [], command


def _run(database_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYPLANE, *args],
        env=keyplane_env(database_url),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_users_commands_for_the_operator(fresh_database_url):
    """Password, role, removal and deactivation, as an operator runs them, and what
    each does to the user's tokens and keys."""
    create_account(keyplane_env(fresh_database_url, KEYPLANE_ADMIN_PASSWORD="alice-password-1"))
    engine = make_engine(fresh_database_url)
    secrets = Secrets.derive(TEST_SECRET)
    factory = Factory.from_engine(engine, secrets)
    with Session(engine) as session:
        account = session.get(Account, 1)
    bob = factory.user(account, Role.MEMBER, username="bob")
    _, full_key = factory.api_key(bob, account)
    verifier = factory.verifier(account)  # alice's token
    env = keyplane_env(
        fresh_database_url, KEYPLANE_SECRET_KEY=TEST_SECRET, KEYPLANE_ADMIN_PASSWORD=PASSWORD
    )
    with serving(env) as (base, _):
        wait_until_up(base)
        bob_token = factory.token(bob)
        assert _me(base, bob_token).status_code == 200

        reset = _run(
            fresh_database_url, "users", "set-password", "bob", stdin="bobs-new-password\n"
        )
        assert reset.returncode == 0, reset.stderr
        assert _me(base, bob_token).status_code == 401
        form = {"grant_type": "password", "username": "bob", "password": "bobs-new-password"}
        assert httpx.post(f"{base}/v1/auth/token", data=form).status_code == 200
        short = _run(fresh_database_url, "users", "set-password", "bob", stdin="short\n")
        assert (short.returncode, short.stderr.count("\n")) == (2, 1)

        last = _run(
            fresh_database_url, "users", "set-role", "alice", "--account", "1", "--role", "member"
        )
        assert (last.returncode, last.stderr) == (
            1,
            "keyplane: An account keeps at least one admin: make another member admin first\n",
        )
        promoted = _run(
            fresh_database_url, "users", "set-role", "bob", "--account", "1", "--role", "admin"
        )
        assert promoted.returncode == 0, promoted.stderr
        _run(fresh_database_url, "users", "set-role", "bob", "--account", "1", "--role", "member")

        removed = _run(fresh_database_url, "users", "remove", "bob", "--account", "1")
        assert removed.returncode == 0, removed.stderr
        assert "switched off 1 keys" in removed.stdout
        assert _verify(base, full_key, verifier) == "DISABLED"
        again = _run(fresh_database_url, "users", "add", "bob", "--account", "1")
        assert again.returncode == 0, again.stderr
        assert _verify(base, full_key, verifier) == "DISABLED"  # back, but the key stays off
        twice = _run(fresh_database_url, "users", "add", "bob", "--account", "1")
        assert (twice.returncode, twice.stderr) == (
            1,
            "keyplane: That user is already a member of this account\n",
        )

        factory.api_key(bob, account)  # a fresh key, on
        with Session(engine) as session:
            fresh_key = session.scalars(select(ApiKey).order_by(ApiKey.id.desc())).first()
        deactivated = _run(fresh_database_url, "users", "deactivate", "bob")
        assert deactivated.returncode == 0, deactivated.stderr
        assert factory.stored_key(fresh_key.id).enabled is False
        assert httpx.post(f"{base}/v1/auth/token", data=form).status_code == 400
        assert _run(fresh_database_url, "users", "activate", "bob").returncode == 0
        assert httpx.post(f"{base}/v1/auth/token", data=form).status_code == 200
        assert factory.stored_key(fresh_key.id).enabled is False  # not revived
    with Session(engine) as session:
        actions = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.actor_type == "operator", AuditEvent.action.like("user.%"))
            .order_by(AuditEvent.id)
        ).all()
    assert actions == [
        "user.added",  # alice, by create-account
        "user.added",  # bob, by the test's factory
        "user.password_reset",
        "user.role_changed",
        "user.role_changed",
        "user.removed",
        "user.added",
        "user.deactivated",
        "user.activated",
    ]
    engine.dispose()


def test_serve_removes_its_metrics_folder_when_it_stops(fresh_database_url, tmp_path):
    env = keyplane_env(fresh_database_url, KEYPLANE_SECRET_KEY=TEST_SECRET, TMPDIR=str(tmp_path))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with serving(env) as (base, _):
        wait_until_up(base)
        made = list(tmp_path.glob("keyplane-metrics-*"))
        assert len(made) == 1
    assert not made[0].exists()


def test_usage_prints_what_the_workers_counted_and_wrote_at_a_clean_shutdown(
    fresh_database_url,
):
    create_account(keyplane_env(fresh_database_url, KEYPLANE_ADMIN_PASSWORD="alice-password-1"))
    # Counts are written only at shutdown here: the flusher's period is an hour.
    env = keyplane_env(
        fresh_database_url,
        KEYPLANE_SECRET_KEY=TEST_SECRET,
        KEYPLANE_LAST_USED_RESOLUTION_SECONDS="3600",
    )
    with serving(env, workers=2) as (base, _):
        wait_until_up(base)
        form = {"grant_type": "password", "username": "alice", "password": "alice-password-1"}
        token = httpx.post(f"{base}/v1/auth/token", data=form).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        full_key = httpx.post(f"{base}/v1/api-keys", json={}, headers=auth).json()["full_key"]
        with httpx.Client(headers=auth | {"Connection": "close"}) as client:  # both workers
            for i in range(10):
                tags = ["endpoint=/orders"] if i % 2 else []
                body = {"key": full_key, "tags": tags}
                assert client.post(f"{base}/v1/keys/verify", json=body).json()["valid"]
            for _ in range(3):
                client.post(f"{base}/v1/keys/verify", json={"key": "kp_nothing"})
    counted = _keyplane(fresh_database_url, "usage", "--account", "1", "--json")
    assert counted.returncode == 0, counted.stderr
    rows = [json.loads(line) for line in counted.stdout.splitlines()]
    assert {row["code"]: row["count"] for row in rows} == {"VALID": 10, "NOT_FOUND": 3}
    by_tag = _keyplane(fresh_database_url, "usage", "--account", "1", "--by", "tag", "--json")
    assert [(r["tag"], r["count"]) for r in map(json.loads, by_tag.stdout.splitlines())] == [
        ("endpoint=/orders", 5)
    ]
    table = _keyplane(fresh_database_url, "usage", "--account", "1", "--by", "key_id,code")
    assert table.stdout.splitlines()[0].split() == ["time", "key_id", "code", "count"]
    assert table.stdout.splitlines()[1].split()[1:] == ["-", "NOT_FOUND", "3"]
    wrong = _keyplane(fresh_database_url, "usage", "--account", "1", "--by", "password")
    assert (wrong.returncode, wrong.stderr.count("\n")) == (2, 1)
    early = _keyplane(fresh_database_url, "usage", "--account", "1", "--to", "0001-01-01T01:00:00Z")
    assert (early.returncode, early.stdout.splitlines()[-1]) == (0, "(no verifies counted)")
