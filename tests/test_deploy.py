"""The production set-up of deploy/README.md, run for real: Debian's nginx with the
shipped site (TLS with a certificate made here) in front of ``keyplane serve`` with
two workers, started as the shipped systemd unit starts it.

Every address is on loopback, and each party has its own: Keyplane listens on
127.0.0.1 and trusts that address (nginx connects from it), the test reaches nginx from
127.0.0.3 and Keyplane directly, as an untrusted peer, from 127.0.0.2.
"""

from __future__ import annotations

import configparser
import datetime
import ipaddress
import json
import re
import shlex
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import TEST_SECRET
from tests.docblocks import REPOSITORY
from tests.servers import (
    create_account,
    debian_program,
    free_port,
    keyplane_env,
    wait_for_port,
    wait_until_up,
)

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

DEPLOY = REPOSITORY / "deploy"
PASSWORD = "deploy-admin-password"
CLIENT = "127.0.0.3"  # the test, as a client of nginx
STRANGER = "127.0.0.2"  # the test, as a peer Keyplane does not trust
NEIGHBOUR = "127.0.0.4"  # another client of nginx
KEYPLANE_LIMIT = 16 * 1024  # smaller than nginx's 64k: both 413s are seen


def _certificate(folder: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (a real one comes from your CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyplane.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    chain = folder / "fullchain.pem"
    chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private = folder / "privkey.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    return chain


@contextmanager
def _nginx(folder: Path, keyplane_port: int) -> Iterator[tuple[int, int]]:
    """The shipped site, with this machine's ports and certificate, under a minimal
    nginx.conf of the test's own (Debian's includes sites-enabled/ the same way)."""
    nginx = debian_program("nginx", "nginx")
    https, http = free_port(), free_port()
    site = (DEPLOY / "nginx-keyplane.conf").read_text()
    for shipped, here in [
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{keyplane_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;"),
        ("listen 80;", f"listen 127.0.0.1:{http};"),
        ("/etc/ssl/keyplane/", f"{folder}/"),
    ]:
        assert shipped in site, shipped
        site = site.replace(shipped, here)
    (folder / "keyplane.conf").write_text(site)
    for temporary in ("body", "proxy"):
        (folder / temporary).mkdir(mode=0o777)
        (folder / temporary).chmod(0o777)  # nginx's workers run as nobody under root
    (folder / "nginx.conf").write_text(
        f"""daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    include {folder}/keyplane.conf;
}}
"""
    )
    checked = subprocess.run(
        [nginx, "-t", "-p", str(folder), "-c", str(folder / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr  # `nginx -t`, as deploy/README.md says
    process = subprocess.Popen(
        [nginx, "-p", str(folder), "-c", str(folder / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(https, process)
        yield https, http
    finally:
        process.terminate()
        process.communicate(timeout=30)


def _unit_command() -> list[str]:
    """The shipped unit's ExecStart, with this checkout's keyplane for /opt/keyplane's."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "keyplane.service")
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0] == "/opt/keyplane/bin/keyplane", argv
    return [str(Path(sys.executable).parent / "keyplane"), *argv[1:]]


@contextmanager
def _keyplane(env: dict[str, str], folder: Path) -> Iterator[tuple[int, Path]]:
    """``keyplane serve`` as the unit starts it, on a free port instead of 8000."""
    port = free_port()
    argv = [part.replace("8000", str(port)) for part in _unit_command()]
    log = folder / "keyplane.log"
    with log.open("w") as output:
        server = subprocess.Popen(argv, env=env, stdout=output, stderr=output)
        try:
            wait_until_up(f"http://127.0.0.1:{port}", timeout=60)
            yield port, log
        finally:
            server.terminate()
            server.wait(timeout=30)


def _production_env(database_url: str, **extra: str) -> dict[str, str]:
    """deploy/README.md's settings (nginx, on 127.0.0.1, the one trusted proxy), with an
    account whose admin is alice."""
    env = keyplane_env(
        database_url,
        KEYPLANE_SECRET_KEY=TEST_SECRET,
        KEYPLANE_ADMIN_PASSWORD=PASSWORD,
        KEYPLANE_TRUSTED_PROXIES="127.0.0.1",
        **extra,
    )
    create_account(env)
    return env


def _sign_in(
    client: httpx.Client, username: str, password: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"grant_type": "password", "username": username, "password": password}
    return client.post("/v1/auth/token", data=body, headers=headers)


def _lines(log: Path) -> list[dict[str, object]]:
    found = []
    for line in log.read_text().splitlines():
        start = line.find("{")
        if start >= 0 and '"request_id"' in line:
            found.append(json.loads(line[start:]))
    return found


def _client(address: str, base_url: str = "", trusting: Path | None = None) -> httpx.Client:
    """A client that connects from ``address``, trusting ``trusting``'s certificate."""
    verify = ssl.create_default_context(cafile=str(trusting)) if trusting else True
    transport = httpx.HTTPTransport(local_address=address, verify=verify)
    return httpx.Client(transport=transport, base_url=base_url, timeout=30)


def test_behind_nginx_with_tls_keyplane_sees_the_real_client_and_never_a_forged_one(
    fresh_database_url, tmp_path
):
    certificate = _certificate(tmp_path)
    env = _production_env(
        fresh_database_url,
        KEYPLANE_MAX_BODY_BYTES=str(KEYPLANE_LIMIT),
        KEYPLANE_LOGIN_MAX_FAILURES_PER_ADDRESS="3",
    )
    with _keyplane(env, tmp_path) as (port, log), _nginx(tmp_path, port) as (https, http):
        site = f"https://127.0.0.1:{https}"
        with _client(CLIENT, base_url=site, trusting=certificate) as client:
            # HTTPS answers; plain HTTP is sent there.
            assert client.get("/healthz").json() == {"status": "ok"}
            with _client(CLIENT) as plain:
                moved = plain.get(f"http://127.0.0.1:{http}/v1/api-keys")
            assert moved.status_code == 308
            assert moved.headers["location"].startswith("https://")

            token = _sign_in(client, "alice", PASSWORD).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            # A forged X-Forwarded-For through nginx is replaced by the real address.
            created = client.post(
                "/v1/api-keys",
                json={"description": "through nginx"},
                headers={**auth, "X-Forwarded-For": "203.0.113.7", "X-Request-ID": "via-nginx"},
            )
            assert created.status_code == 201, created.text
            assert created.headers["X-Request-ID"] == "via-nginx"  # passed through

            # 413 from whichever limit is smaller: Keyplane's (16 KiB, a problem body)...
            mine = client.post("/v1/api-keys", content=b"x" * (32 * 1024), headers=auth)
            assert mine.status_code == 413
            assert mine.headers["content-type"].startswith("application/")
            # ... and nginx's own (64k) for a body above both.
            theirs = client.post("/v1/api-keys", content=b"x" * (128 * 1024), headers=auth)
            assert theirs.status_code == 413 and "nginx" in theirs.text

            # The login throttle counts the real client's guesses, not nginx's address:
            # three across names from this client, and it is refused...
            for name in ("alice", "bob", "carol"):
                assert _sign_in(client, name, "wrong-password").status_code == 400
            refused = _sign_in(client, "alice", PASSWORD)
            assert refused.status_code == 429
            assert "from this address" in refused.json()["detail"]
        # ... while another client, through the same nginx, is not.
        with _client(NEIGHBOUR, base_url=site, trusting=certificate) as other:
            assert _sign_in(other, "alice", PASSWORD).status_code == 200

        # Straight to Keyplane from an address it does not trust: the header is ignored
        # (and claiming the throttled client's address does not make it so).
        with _client(STRANGER, base_url=f"http://127.0.0.1:{port}") as direct:
            claimed = {"X-Forwarded-For": CLIENT}
            assert _sign_in(direct, "alice", PASSWORD, claimed).status_code == 200
            forged = direct.post(
                "/v1/api-keys",
                json={"description": "forged"},
                headers={**auth, "X-Forwarded-For": "203.0.113.7", "X-Request-ID": "forged"},
            )
            assert forged.status_code == 201, forged.text
            events = direct.get("/v1/audit-events?action=key.created", headers=auth).json()

        by_key = {event["target"]["id"]: event["actor"]["address"] for event in events["items"]}
        assert by_key == {str(created.json()["id"]): CLIENT, str(forged.json()["id"]): STRANGER}
        lines = {line["request_id"]: line for line in _lines(log)}
        assert lines["via-nginx"]["client"] == CLIENT
        assert lines["forged"]["client"] == STRANGER
        assert not any(line["client"] == "203.0.113.7" for line in lines.values())


def test_a_slow_client_is_cut_by_nginx_and_never_holds_a_keyplane_worker(
    fresh_database_url, tmp_path
):
    """More trickling uploads than Keyplane has threads: nginx holds them all, Keyplane
    never sees one and keeps answering; nginx closes each at its body timeout (10 s)."""
    certificate = _certificate(tmp_path)
    env = _production_env(fresh_database_url, KEYPLANE_THREADS="2")
    with _keyplane(env, tmp_path) as (port, log), _nginx(tmp_path, port) as (https, _):
        context = ssl.create_default_context(cafile=str(certificate))
        slow = []
        for number in range(8):  # 2 workers x 2 threads, twice over
            raw = socket.create_connection(("127.0.0.1", https), source_address=(CLIENT, 0))
            connection = context.wrap_socket(raw, server_hostname="127.0.0.1")
            connection.sendall(
                b"POST /v1/api-keys HTTP/1.1\r\nHost: keyplane\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
                + f"X-Request-ID: slow-{number}\r\n\r\n".encode()
                + b'{"description": "'
            )
            slow.append(connection)
        started = time.monotonic()
        with _client(CLIENT, base_url=f"https://127.0.0.1:{https}", trusting=certificate) as c:
            for _ in range(20):
                assert _sign_in(c, "alice", PASSWORD).status_code == 200
        assert time.monotonic() - started < 8, "a request waited behind the slow clients"
        for connection in slow:  # nginx ends each once its body stops for 10 s
            connection.settimeout(20)
            answer = b""
            try:
                while chunk := connection.recv(4096):
                    answer += chunk
            except (ConnectionResetError, ssl.SSLError):
                pass
            assert answer == b"" or re.match(rb"HTTP/1\.1 408", answer), answer[:80]
            connection.close()
        assert not [line for line in _lines(log) if str(line["request_id"]).startswith("slow-")]
