"""The webhook sender: each worker process sends the outbox's due deliveries
(``db.webhooks``) from threads of its own, so no request ever waits on an endpoint.

A send is bounded: ``KEYPLANE_WEBHOOKS_TIMEOUT_SECONDS`` (10 s) for the whole attempt,
at most 2 s of it to connect, and ``KEYPLANE_WEBHOOKS_CONCURRENCY`` sends at once per
process. The endpoint's name is resolved at each send, and the request goes to the
address that was checked (``db.webhooks.is_public_address``), with the name kept for
the ``Host`` header and TLS: a name that resolves into a private network, however it
resolved at registration, is not sent to (SSRF). Redirects are not followed.

Every message is signed as Standard Webhooks says, by its reference library:
``webhook-id`` (the event's, the same on every attempt), ``webhook-timestamp`` (the
attempt's) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>``, one per secret
that signs, space-separated).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy.exc import SQLAlchemyError
from standardwebhooks import Webhook

import db.api_keys
import db.webhooks
from db.crypto import Secrets
from db.session import Sessions
from db.webhooks import Outcome, Outgoing

logger = logging.getLogger("keyplane.webhooks")

POLL_SECONDS = 1.0
SWEEP_EVERY_SECONDS = 60.0
KEEP_FINISHED = timedelta(days=30)
READ_AT_MOST = 64 * 1024  # of an endpoint's answer: its status is what counts
USER_AGENT = "Keyplane-Webhooks/1"


class Refused(Exception):
    """A send that was not attempted: the target is not allowed, or does not resolve."""


class Sender:
    """Claims due deliveries and sends them, ``concurrency`` at a time; once a minute
    puts ``key.expiring`` events in the outbox and forgets finished old events."""

    def __init__(
        self,
        sessions: Sessions,
        secrets: Secrets,
        *,
        timeout_seconds: float = 10.0,
        concurrency: int = 4,
        allow_private: bool = False,
        expiring_within: timedelta = timedelta(days=7),
    ) -> None:
        self.sessions = sessions
        self.secrets = secrets
        self.timeout_seconds = timeout_seconds
        self.concurrency = concurrency
        self.allow_private = allow_private
        self.expiring_within = expiring_within
        # A lease outlives the longest send: then a sender that died lets go.
        self.lease = timedelta(seconds=timeout_seconds + 5)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight = threading.Semaphore(concurrency)
        self._swept = 0.0

    def start(self) -> None:
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="keyplane-webhook")
        self._thread = threading.Thread(target=self._run, name="keyplane-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Sends under way finish (each within its timeout); nothing new starts."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.send_due(datetime.now(UTC), wait=False)
                if time.monotonic() - self._swept >= SWEEP_EVERY_SECONDS:
                    self._swept = time.monotonic()
                    self.sweep(datetime.now(UTC))
            except SQLAlchemyError as error:
                logger.warning("webhooks not sent yet (%s); will retry", type(error).__name__)
            except Exception:
                logger.exception("webhooks: unexpected error; will retry")

    def send_due(self, now: datetime, *, wait: bool = True) -> int:
        """Claim what is due at ``now`` (as many as there are free senders) and send it;
        ``wait``: return once each is sent and settled. How many were claimed."""
        with self.sessions.reading() as session:  # most rounds: no write lock at all
            if not db.webhooks.anything_due(session, now):
                return 0
        free = 0
        while free < self.concurrency and self._in_flight.acquire(blocking=False):
            free += 1
        try:
            with self.sessions.writing() as session, session.begin():
                claimed = db.webhooks.claim(
                    session, self.secrets, now, limit=free, lease=self.lease
                )
        except BaseException:
            self._release(free)
            raise
        self._release(free - len(claimed))
        if wait or self._pool is None:
            for outgoing in claimed:
                self._send_and_settle(outgoing)
        else:
            for outgoing in claimed:
                self._pool.submit(self._send_and_settle, outgoing)
        return len(claimed)

    def sweep(self, now: datetime) -> None:
        with self.sessions.writing() as session, session.begin():
            db.api_keys.warn_expiring(session, now, self.expiring_within)
        with self.sessions.writing() as session, session.begin():
            db.webhooks.forget_before(session, now - KEEP_FINISHED)

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._in_flight.release()

    def _send_and_settle(self, outgoing: Outgoing) -> None:
        try:
            outcome = self.send(outgoing)
            for wait in (0.1, 0.5, 2.0, None):  # the answer is in: record it if at all possible
                try:
                    with self.sessions.writing() as session, session.begin():
                        db.webhooks.settle(session, outgoing, outcome, datetime.now(UTC))
                    break
                except SQLAlchemyError:
                    if wait is None:
                        raise
                    time.sleep(wait)
        except Exception:
            logger.exception("webhook delivery %s not settled", outgoing.delivery_id)
        finally:
            self._in_flight.release()

    def send(self, outgoing: Outgoing) -> Outcome:
        """One attempt: signed now, sent to the checked address, timed."""
        started = time.monotonic()
        body = json.dumps(outgoing.body, separators=(",", ":"), sort_keys=True).encode()
        sent_at = datetime.now(UTC)
        signature = " ".join(
            Webhook(secret).sign(outgoing.event_id, sent_at, body) for secret in outgoing.secrets
        )
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": outgoing.event_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature,
        }
        try:
            url, host = self._target(outgoing.url)
            status = self._post(url, host, headers, body, started + self.timeout_seconds)
        except Refused as refused:
            return Outcome(None, _ms_since(started), str(refused))
        except httpx.TimeoutException:
            return Outcome(None, _ms_since(started), "timed out")
        except httpx.HTTPError as error:
            return Outcome(None, _ms_since(started), f"{type(error).__name__}: {error}")
        return Outcome(status, _ms_since(started))

    def _target(self, url: str) -> tuple[str, str]:
        """``url`` with its host replaced by the address it resolves to now, and the
        host; refused if that address may not be sent to."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise Refused(f"{host} does not resolve: {error}") from None
        address = str(found[0][4][0])
        if not self.allow_private and not all(
            db.webhooks.is_public_address(str(info[4][0])) for info in found
        ):
            raise Refused(f"{host} resolves to a private address: not sent")
        literal = f"[{address}]" if ":" in address else address
        netloc = f"{literal}:{port}"
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host

    def _post(
        self, url: str, host: str, headers: dict[str, str], body: bytes, deadline: float
    ) -> int:
        left = max(0.2, deadline - time.monotonic())
        connect = min(2.0, left / 2)
        timeout = httpx.Timeout(left - connect, connect=connect)  # connect, then the rest
        port = urlsplit(url).port
        default_port = 443 if url.startswith("https:") else 80
        headers = headers | {"host": host if port == default_port else f"{host}:{port}"}
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream(
                "POST", url, content=body, headers=headers, extensions={"sni_hostname": host}
            ) as response,
        ):
            read = 0
            for chunk in response.iter_raw():
                read += len(chunk)
                if read >= READ_AT_MOST or time.monotonic() > deadline:
                    break
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("the endpoint took longer than the send's time")
            return response.status_code


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
