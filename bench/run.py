"""Keyplane against what its users would build instead, on this machine.

    python -m bench.run                      # 10,000 keys, SQLite and PostgreSQL
    python -m bench.run --keys 1000000       # the large data set (adds to the results)
    python -m bench.run --smoke              # every contender answers correctly once

Each contender is its own server on 127.0.0.1 with 2 workers, serving the same
operations on the same number of keys: Keyplane as ``keyplane serve`` runs it, a
FastAPI + SQLAlchemy app written as FastAPI's tutorial teaches, Django REST
Framework + djangorestframework-api-key on gunicorn, and two floors (a validated
no-op verify on Connexion's ``AsyncApp`` from the same spec, and Keyplane's
``/healthz``). Each round serves each contender alone in turn (A B C A B C ...) and
``wrk`` drives each of its operations for a few seconds, so that drift on a shared
machine touches them all alike and no idle server holds connections or CPU. The
figures are the medians of the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.figures import (
    BASELINE,
    FLOOR_QUERY,
    KEYPLANE_OPEN,
    KEYPLANE_REDIS,
    KEYPLANE_SMALL,
    LIMITED,
    LIMITED_SPREAD,
    SMALL,
    VERIFY,
    VERIFY_SPREAD,
    Figure,
)
from bench.seed import HELD, Seeded, seed

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
BIN = Path(sys.executable).parent
RESULTS = HERE / "results"
SECRET = "bench-only-secret-never-for-a-real-deployment-0123456789"  # noqa: S105
PASSWORD = "bench-password-0123456789"  # noqa: S105
WRK = shutil.which("wrk") or "wrk"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"  # emptied by every run


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: str = ""
    authorization: str = ""
    numbered: bool = False  # "{n}" in the body: a number of its own in every request
    bodies: tuple[str, ...] = ()  # instead of ``body``: one after another, round and round

    @property
    def content_type(self) -> str:
        return "application/json" if self.body or self.bodies else ""


@dataclass(frozen=True)
class Expect:
    status: int
    code: str | None = None  # a verify answer's code


@dataclass
class Contender:
    name: str
    command: list[str]
    env: dict[str, str]
    ready: str  # a GET path that answers 200 once the server serves
    operations: dict[str, tuple[Request, Expect]] = field(default_factory=dict)
    audit: str = ""  # where its audit trail is read, if it keeps one
    process: subprocess.Popen[bytes] | None = None
    port: int = 0


def _verify(key: str, permissions: list[str] | None = None) -> str:
    return json.dumps({"key": key, "permissions": permissions or [HELD]})


def _verifies(
    valid: str, lacking: str, malformed: str, auth: str = ""
) -> dict[str, tuple[Request, Expect]]:
    """Verify as the API calls it, ``auth`` its own credential (none: open verify)."""
    verify = "/v1/keys/verify"
    return {
        VERIFY: (Request("POST", verify, _verify(valid), auth), Expect(200, "VALID")),
        "verify: malformed": (
            Request("POST", verify, _verify(malformed), auth),
            Expect(200, "NOT_FOUND"),
        ),
        "verify: lacking a permission": (
            Request("POST", verify, _verify(lacking), auth),
            Expect(200, "INSUFFICIENT_PERMISSIONS"),
        ),
    }


def _limits(seeded: Seeded) -> dict[str, tuple[Request, Expect]]:
    """Plain verify spread over keys, and verify of limited keys, hot and spread."""
    valid = Expect(200, "VALID")
    verify, auth = "/v1/keys/verify", f"Bearer {seeded.verifier}"
    return {
        VERIFY_SPREAD: (Request("POST", verify, "", auth, bodies=_each(seeded.spread)), valid),
        LIMITED: (Request("POST", verify, _verify(seeded.limited[0]), auth), valid),
        LIMITED_SPREAD: (Request("POST", verify, "", auth, bodies=_each(seeded.limited)), valid),
    }


def _each(keys: list[str]) -> tuple[str, ...]:
    return tuple(_verify(key) for key in keys)


def _manages(key_id: int, token: str) -> dict[str, tuple[Request, Expect]]:
    bearer = f"Bearer {token}"
    patch = json.dumps({"description": "benchmarked", "expires_at": "2030-01-01T00:00:00Z"})
    renamed = json.dumps({"description": "benchmarked {n}"})
    return {
        # The same body every time: from the second request on, it changes nothing.
        "PATCH /v1/api-keys/{item_id}": (
            Request("PATCH", f"/v1/api-keys/{key_id}", patch, bearer),
            Expect(200),
        ),
        # A description never sent before: every request changes the key (a write and,
        # on Keyplane, its audit event).
        "PATCH, a new description each time": (
            Request("PATCH", f"/v1/api-keys/{key_id}", renamed, bearer, numbered=True),
            Expect(200),
        ),
        "list keys (20)": (Request("GET", "/v1/api-keys?limit=20", "", bearer), Expect(200)),
    }


class Databases:
    """Each contender's own database: a SQLite file, or a new PostgreSQL database."""

    def __init__(self, kind: str, postgres: str, folder: Path) -> None:
        self.kind = kind
        self._postgres = make_url(postgres)
        self._folder = folder
        self._created: list[str] = []

    def new(self, name: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self._folder / name}.db"
        database = f"kpbench_{os.getpid()}_{name}"
        self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{database}"')
        self._created.append(database)
        return self._postgres.set(database=database).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for database in self._created:
            self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        engine = create_engine(self._postgres, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _uvicorn(app: str) -> list[str]:
    quiet = ["--no-access-log", "--log-level", "warning"]
    return [str(BIN / "uvicorn"), app, "--workers", "2", "--port", "{port}", *quiet]


def _python(module: str, *args: str, env: dict[str, str]) -> None:
    subprocess.run(  # noqa: S603
        [sys.executable, "-m", module, *args],
        cwd=REPOSITORY,
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def prepare(
    databases: Databases,
    keys: int,
    folder: Path,
    redis_url: str | None,
    baseline: str | None = None,
) -> list[Contender]:
    """Seed every contender's data set and describe how to serve it."""
    contenders = []

    url = databases.new("keyplane")
    seeded = seed(url, SECRET, keys, "bench", PASSWORD)
    verifier = f"Bearer {seeded.verifier}"  # the account's API verifies with its own key
    keyplane = Contender(
        "Keyplane",
        [str(BIN / "keyplane"), "serve", "--workers", "2", "--port", "{port}"],
        {"KEYPLANE_DATABASE_URL": url, "KEYPLANE_SECRET_KEY": SECRET},
        "/healthz",
        _verifies(seeded.valid, seeded.lacking, "kp_malformed", verifier),
    )
    keyplane.operations |= _manages(seeded.key_id, seeded.token) | _limits(seeded)
    keyplane.operations["healthz (floor)"] = (Request("GET", "/healthz"), Expect(200))
    keyplane.audit = "/v1/audit-events"
    contenders.append(keyplane)
    # The same database, verify without a credential: what the verifier's check costs.
    contenders.append(
        Contender(
            KEYPLANE_OPEN,
            keyplane.command,
            keyplane.env | {"KEYPLANE_VERIFY_OPEN": "true"},
            "/healthz",
            {VERIFY: _verifies(seeded.valid, "", "")[VERIFY]},
        )
    )
    if redis_url is not None:
        # The same database, served with its rate-limit windows in Redis.
        limited = {op: _limits(seeded)[op] for op in (LIMITED, LIMITED_SPREAD)}
        contenders.append(
            Contender(
                KEYPLANE_REDIS,
                keyplane.command,
                keyplane.env | {"KEYPLANE_REDIS_URL": redis_url},
                "/healthz",
                limited,
            )
        )
    if baseline is not None:
        contenders.append(_baseline(databases, keys, folder, baseline))
    if keys > SMALL:
        # The size target compares verify at this size with verify at 10,000 keys: both
        # in this run, alternated like the rest, so the machine's drift between runs
        # does not pass for a cost of size.
        url = databases.new("keyplane_small")
        small = seed(url, SECRET, SMALL, "bench", PASSWORD)
        contenders.append(
            Contender(
                KEYPLANE_SMALL,
                keyplane.command,
                {"KEYPLANE_DATABASE_URL": url, "KEYPLANE_SECRET_KEY": SECRET},
                "/healthz",
                {VERIFY: _verifies(small.valid, "", "", f"Bearer {small.verifier}")[VERIFY]},
            )
        )

    url = databases.new("fastapi")
    env = {"BENCH_DATABASE_URL": url, "BENCH_JWT_SECRET": SECRET}
    info = folder / "fastapi.json"
    _python("bench.peers.fastapi_peer.seed", "--keys", str(keys), "--out", str(info), env=env)
    peer = json.loads(info.read_text())
    fastapi = Contender(
        "FastAPI + SQLAlchemy",
        _uvicorn("bench.peers.fastapi_peer.app:app"),
        env,
        "/docs",
        # The verifying service signs in as the FastAPI tutorial teaches (OAuth2, a JWT).
        _verifies(peer["valid"], peer["lacking"], peer["malformed"], f"Bearer {peer['token']}"),
    )
    fastapi.operations |= _manages(peer["patch_id"], peer["token"])
    contenders.append(fastapi)

    url = databases.new("drf")
    env = {"BENCH_DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "bench.peers.drf_peer.settings"}
    info = folder / "drf.json"
    _python("bench.peers.drf_peer.seed", "--keys", str(keys), "--out", str(info), env=env)
    peer = json.loads(info.read_text())
    contenders.append(
        Contender(
            "DRF + drf-api-key",
            [
                str(BIN / "gunicorn"),
                "-w",
                "2",
                "-b",
                "127.0.0.1:{port}",
                "bench.peers.drf_peer.wsgi",
            ],
            env,
            "",
            _verifies(peer["valid"], peer["lacking"], peer["malformed"], peer["verifier"]),
        )
    )

    floor = Contender(
        "AsyncApp no-op (floor)",
        _uvicorn("bench.floor:app"),
        {},
        "",
        # The same validated request as Keyplane's; the handler answers without looking.
        {
            VERIFY: (
                _verifies(seeded.valid, "", "", verifier)[VERIFY][0],
                Expect(200),
            )
        },
    )
    contenders.append(floor)
    contenders.append(
        Contender(
            FLOOR_QUERY,
            _uvicorn("bench.floor:one_query"),
            {"BENCH_DATABASE_URL": keyplane.env["KEYPLANE_DATABASE_URL"], "BENCH_SECRET": SECRET},
            "",
            # Keyplane's valid key, looked up in Keyplane's database and found.
            {VERIFY: _verifies(seeded.valid, "", "", verifier)[VERIFY]},
        )
    )
    return contenders


# Run inside the baseline's tree: its own seeding, on a schema its own migrations make.
_SEED_THEN = """
import json, sys
from bench.seed import seed
seeded = seed(sys.argv[1], sys.argv[2], int(sys.argv[3]), "bench", sys.argv[4])
print(json.dumps({"valid": seeded.valid}))
"""


def _baseline(databases: Databases, keys: int, folder: Path, revision: str) -> Contender:
    """Keyplane as it was at git ``revision``, served from that revision's files on a data
    set that revision's code seeds: plain verify then and now, alternated in one run."""
    tree = folder / "baseline"
    tree.mkdir()
    archive = subprocess.run(  # noqa: S603
        ["git", "archive", revision],  # noqa: S607
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as files:
        files.extractall(tree, filter="data")
    url = databases.new("keyplane_baseline")
    # Its packages shadow this tree's (the editable install's finder comes after the path).
    # Open verify: a revision before verifiers ignores the setting, a later one needs it.
    env = {
        "PYTHONPATH": str(tree),
        "KEYPLANE_DATABASE_URL": url,
        "KEYPLANE_SECRET_KEY": SECRET,
        "KEYPLANE_VERIFY_OPEN": "true",
    }
    seeded = subprocess.run(  # noqa: S603
        [sys.executable, "-c", _SEED_THEN, url, SECRET, str(keys), PASSWORD],
        cwd=tree,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    valid = json.loads(seeded.stdout.splitlines()[-1])["valid"]
    return Contender(
        BASELINE,
        [str(BIN / "keyplane"), "serve", "--workers", "2", "--port", "{port}"],
        env,
        "/healthz",
        {VERIFY: _verifies(valid, "", "")[VERIFY]},
    )


@contextlib.contextmanager
def serving(contender: Contender) -> Iterator[None]:
    """The contender's server, on a port of its own, until the block ends."""
    contender.port = _free_port()
    command = [part.replace("{port}", str(contender.port)) for part in contender.command]
    contender.process = subprocess.Popen(  # noqa: S603
        command,
        cwd=REPOSITORY,
        env={**os.environ, **contender.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_ready(contender)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(contender.process.pid, signal.SIGTERM)
        try:
            contender.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(contender.process.pid, signal.SIGKILL)
            contender.process.wait()


def _wait_ready(contender: Contender, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert contender.process is not None
        if contender.process.poll() is not None:
            raise SystemExit(f"{contender.name} exited while starting")
        if contender.ready:
            with contextlib.suppress(OSError):
                status, _ = send(contender, Request("GET", contender.ready))
                if status == 200:
                    return
        else:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", contender.port), timeout=1),
            ):
                return
        time.sleep(0.2)
    raise SystemExit(f"{contender.name} did not answer within {seconds:.0f} s")


def only(contenders: list[Contender], words: list[str]) -> list[Contender]:
    """The contenders of the operations named by ``words``, with those operations only."""
    for contender in contenders:
        contender.operations = {
            name: operation
            for name, operation in contender.operations.items()
            if any(word in name for word in words)
        }
    return [contender for contender in contenders if contender.operations]


def send(contender: Contender, request: Request) -> tuple[int, Any]:
    http = urllib.request.Request(
        f"http://127.0.0.1:{contender.port}{request.path}",
        data=request.body.encode() or None,
        method=request.method,
    )
    if request.content_type:
        http.add_header("Content-Type", request.content_type)
    if request.authorization:
        http.add_header("Authorization", request.authorization)
    try:
        with urllib.request.urlopen(http, timeout=10) as response:  # noqa: S310
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def check(contender: Contender) -> list[str]:
    """The contender answers every operation as it should: the smoke test's whole job."""
    wrong = []
    for operation, (request, expect) in contender.operations.items():
        numbers = ("check 1", "check 2") if request.numbered else ("",)
        sends = [request.body.replace("{n}", number) for number in numbers]
        if request.bodies:
            sends, numbers = [request.bodies[0], request.bodies[-1]], ("", "")
        audited = _audited(contender, request) if request.numbered else []
        for number, sent in zip(numbers, sends, strict=True):
            status, body = send(contender, dataclasses.replace(request, body=sent))
            code = body.get("code") if isinstance(body, dict) else None
            if status != expect.status or (expect.code is not None and code != expect.code):
                wrong.append(f"{contender.name}, {operation}: {status} {body!r:.200}")
            elif number and body.get("description") != json.loads(sent)["description"]:
                wrong.append(f"{contender.name}, {operation}: not changed: {body!r:.200}")
        if request.numbered and contender.audit:
            # Each writing PATCH is in the trail once, changing what the one before set.
            written = [json.loads(sent)["description"] for sent in sends]
            now = _audited(contender, request)
            if now != [*audited, *written]:
                wrong.append(f"{contender.name}, {operation}: audited {now[-4:]}, not {written}")
    return wrong


def _audited(contender: Contender, request: Request) -> list[str]:
    """The descriptions the ``key.updated`` events of the key ``request`` changes set,
    oldest first (the smoke run's few fit on one page)."""
    if not contender.audit:
        return []
    key_id = request.path.rsplit("/", 1)[-1]
    query = f"?action=key.updated&key_id={key_id}&limit=100"
    status, body = send(
        contender, Request("GET", contender.audit + query, authorization=request.authorization)
    )
    assert status == 200, body
    changes = [event["changes"] for event in reversed(body["items"])]
    return [change["description"]["to"] for change in changes if "description" in change]


def _wrk(
    contender: Contender, request: Request, seconds: float, connections: int
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as bodies:
        bodies.write("".join(f"{body}\n" for body in request.bodies))
        bodies.flush()
        return _wrk_with(contender, request, seconds, connections, bodies.name)


def _wrk_with(
    contender: Contender, request: Request, seconds: float, connections: int, bodies: str
) -> dict[str, Any]:
    result = subprocess.run(  # noqa: S603
        [
            WRK,
            "-t1",
            f"-c{connections}",
            f"-d{round(seconds)}s",
            "--timeout",
            "5s",
            "-s",
            str(HERE / "wrk.lua"),
            f"http://127.0.0.1:{contender.port}{request.path}",
        ],
        env={
            **os.environ,
            "BENCH_METHOD": request.method,
            "BENCH_BODY": request.body,
            "BENCH_CONTENT_TYPE": request.content_type,
            "BENCH_AUTHORIZATION": request.authorization,
            "BENCH_NUMBERED": "1" if request.numbered else "",
            "BENCH_BODIES": bodies if request.bodies else "",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def measure(
    contenders: list[Contender],
    database: str,
    keys: int,
    seconds: float,
    rounds: int,
    connections: int,
) -> tuple[list[Figure], dict[str, float]]:
    """Each round serves each contender alone in turn and drives all its operations:
    no idle server holds the database's connections (three Keyplanes, the peers and a
    floor would pass PostgreSQL's 100 at once) or a share of the CPU. Also the largest
    worker each contender ran, in MB."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    rss: dict[str, float] = {}
    for round_ in range(rounds):
        for contender in contenders:
            with serving(contender):
                # Warm it, unrecorded: its pools fill, its workers answer.
                _wrk(contender, next(iter(contender.operations.values()))[0], 2, connections)
                for operation, (request, _) in contender.operations.items():
                    run = _wrk(contender, request, seconds, connections)
                    runs.setdefault((operation, contender.name), []).append(run)
                    print(
                        f"  [{database}, {keys:,} keys, round {round_ + 1}/{rounds}] "
                        f"{operation:32} {contender.name:24} "
                        f"{run['requests'] / run['seconds']:8.0f} req/s",
                        flush=True,
                    )
                rss[contender.name] = max(rss.get(contender.name, 0.0), peak_rss_mb(contender))
    figures = [
        Figure(
            database,
            keys,
            operation,
            name,
            rps=statistics.median(r["requests"] / r["seconds"] for r in measured),
            p50_ms=statistics.median(r["p50_ms"] for r in measured),
            p99_ms=statistics.median(r["p99_ms"] for r in measured),
            non_2xx=sum(r["non_2xx"] for r in measured),
            socket_errors=sum(r["socket_errors"] for r in measured),
            rounds=len(measured),
        )
        for (operation, name), measured in runs.items()
    ]
    return figures, rss


def peak_rss_mb(contender: Contender) -> float:
    """The largest peak resident set of the server's worker processes (VmHWM), in MB."""
    assert contender.process is not None
    pids = _descendants(contender.process.pid) or [contender.process.pid]
    peaks = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return max(peaks, default=0.0)


def _descendants(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            raw = (task / "children").read_text().split()
            children += [int(child) for child in raw]
    return [d for child in children for d in (child, *_descendants(child))]


def _emptied(url: str) -> str | None:
    """``url``'s Redis database, emptied; None (and said so) where Redis does not answer."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as error:
        print(f"no {KEYPLANE_REDIS} contender: Redis at {url}: {error}", file=sys.stderr)
        return None
    finally:
        client.close()
    return url


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    wrk = subprocess.run([WRK, "--version"], capture_output=True, text=True).stdout  # noqa: S603
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} cores, {cpu}",
        "memory": f"{int(memory) // 1024 // 1024} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "wrk": wrk.split(" [")[0].strip(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=SMALL)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--postgres", default=os.environ.get("KEYPLANE_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS),
        help="a Redis database the run may empty, for the windows-in-Redis contender",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also serve Keyplane as it was at this git revision, for plain verify",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="answer each operation once; no timing"
    )
    parser.add_argument(
        "--only",
        metavar="WORDS",
        help="only the operations whose name holds one of these comma-separated words"
        " (say PATCH,list); a quick look, not a run to publish",
    )
    args = parser.parse_args(argv)
    if not args.smoke and not shutil.which("wrk"):
        print("the benchmark drives load with wrk: apt-get install wrk", file=sys.stderr)
        return 2

    redis_url = _emptied(args.redis)
    started = time.monotonic()
    figures: list[Figure] = []
    rss: dict[str, dict[str, float]] = {}
    for database in args.databases.split(","):
        with tempfile.TemporaryDirectory(prefix="kpbench-") as folder:
            databases = Databases(database, args.postgres, Path(folder))
            try:
                keys = 100 if args.smoke else args.keys
                print(f"{database}: seeding {keys:,} keys per contender", flush=True)
                contenders = prepare(databases, keys, Path(folder), redis_url, args.baseline)
                if args.only:
                    contenders = only(contenders, args.only.split(","))
                wrong = []
                for contender in contenders:
                    with serving(contender):
                        wrong += check(contender)
                if wrong:
                    print("\n".join(["wrong answers:", *wrong]), file=sys.stderr)
                    return 1
                if args.smoke:
                    print(f"{database}: every contender answered every operation correctly")
                    continue
                measured, peaks = measure(
                    contenders, database, keys, args.seconds, args.rounds, args.connections
                )
                figures += measured
                rss[f"{database}, {keys:,} keys"] = peaks
            finally:
                databases.drop_all()
    if args.only:  # a quick look: told, not written over the published results
        for figure in figures:
            print(
                f"{figure.database:10} {figure.operation:36} {figure.contender:24}"
                f" {figure.rps:8.0f} req/s  p99 {figure.p99_ms:6.1f} ms  non-2xx {figure.non_2xx}"
            )
    elif not args.smoke:
        from bench.report import write

        write(RESULTS, figures, rss, machine(), vars(args))
        print(f"written to {RESULTS} in {(time.monotonic() - started) / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
