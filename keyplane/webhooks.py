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

import asyncio
import itertools
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

from keyplane import db
from keyplane.db.crypto import Secrets
from keyplane.db.session import Sessions
from keyplane.db.webhooks import Outcome, Outgoing

logger = logging.getLogger("keyplane.webhooks")

POLL_SECONDS = 1.0
# An attempt's answer is recorded within this long after its send's time, however long
# the database is away meanwhile (``_settle``: no try starts later). A lease covers
# both, the last try's own time (at most a pool wait, a connect and the statements'
# timeouts) and instances' clocks differing by up to 10 s: then, and only then,
# another may send the delivery.
SETTLE_SECONDS = 20.0
LAST_TRY_AND_CLOCKS = timedelta(seconds=20)
SWEEP_EVERY_SECONDS = 60.0
KEEP_FINISHED = timedelta(days=30)
READ_AT_MOST = 64 * 1024  # of an endpoint's answer: its status is what counts
USER_AGENT = "Keyplane-Webhooks/1"
# What an attempt's error tells the account's admin: nothing about the operator's DNS.
NOT_ALLOWED = "not sent: the endpoint's address does not resolve or is not allowed"
UNREADABLE_SECRET = "not sent: its signing secret was sealed under a retired server secret"  # noqa: S105


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
        # A lease outlives the longest send and its settling, with room for instances'
        # clocks to differ: then a sender that died lets go.
        self.lease = timedelta(seconds=timeout_seconds + SETTLE_SECONDS) + LAST_TRY_AND_CLOCKS
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
        settle_by = time.monotonic() + self.timeout_seconds + SETTLE_SECONDS  # as ``now``
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
                self._send_and_settle(outgoing, settle_by)
        else:
            for outgoing in claimed:
                self._pool.submit(self._send_and_settle, outgoing, settle_by)
        return len(claimed)

    def sweep(self, now: datetime) -> None:
        with self.sessions.writing() as session, session.begin():
            db.api_keys.warn_expiring(session, now, self.expiring_within)
        with self.sessions.writing() as session, session.begin():
            db.webhooks.forget_before(session, now - KEEP_FINISHED)

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._in_flight.release()

    def _send_and_settle(self, outgoing: Outgoing, settle_by: float) -> None:
        try:
            self._settle(outgoing, self.send(outgoing), settle_by)
        except Exception:
            logger.exception("webhook delivery %s not settled", outgoing.delivery_id)
        finally:
            self._in_flight.release()

    def _settle(self, outgoing: Outgoing, outcome: Outcome, settle_by: float) -> None:
        """The answer is in: record it while the lease is this sender's, through the
        database's absences. Given up, the delivery is sent again once its lease runs out
        (at least once), so it is given up only at ``settle_by`` or when stopping."""
        waits = itertools.chain((0.1, 0.5, 1.0), itertools.repeat(2.0))
        while True:
            try:
                with self.sessions.writing() as session, session.begin():
                    db.webhooks.settle(session, outgoing, outcome, datetime.now(UTC))
                return
            except SQLAlchemyError:
                wait = next(waits)
                if time.monotonic() + wait >= settle_by or self._stop.wait(wait):
                    raise

    def send(self, outgoing: Outgoing) -> Outcome:
        """One attempt: signed now, sent to the checked address, within the send's time."""
        started = time.monotonic()
        if not outgoing.secrets:
            return Outcome(None, 0, UNREADABLE_SECRET)
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
            status = asyncio.run(self._attempt(outgoing.url, headers, body))
        except Refused:
            return Outcome(None, _ms_since(started), NOT_ALLOWED)
        except TimeoutError:
            return Outcome(None, _ms_since(started), "timed out")
        except httpx.HTTPError as error:
            return Outcome(None, _ms_since(started), f"{type(error).__name__}: {error}")
        except Exception as error:  # a bug: the attempt failed, the delivery goes on
            logger.exception("webhook delivery %s: unexpected error", outgoing.delivery_id)
            return Outcome(None, _ms_since(started), type(error).__name__)
        return Outcome(status, _ms_since(started))

    async def _attempt(self, url: str, headers: dict[str, str], body: bytes) -> int:
        """The whole attempt, the lookup included, within the send's time: cancelled at
        its end however slowly the endpoint trickles its answer."""
        async with asyncio.timeout(self.timeout_seconds):
            target, host, port = await self._target(url)
            default_port = 443 if target.startswith("https:") else 80
            headers = headers | {"host": host if port == default_port else f"{host}:{port}"}
            timeout = httpx.Timeout(self.timeout_seconds, connect=min(2.0, self.timeout_seconds))
            async with (
                httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as c,
                c.stream(
                    "POST", target, content=body, headers=headers, extensions={"sni_hostname": host}
                ) as response,
            ):
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= READ_AT_MOST:
                        break
                return response.status_code

    async def _target(self, url: str) -> tuple[str, str, int]:
        """``url`` with its host replaced by the address it resolves to now, the host (in
        IDNA) and the port; ``Refused`` if that address may not be sent to."""
        parts = urlsplit(url)
        try:
            host = db.webhooks.ascii_host(parts.hostname or "")
        except ValueError:
            raise Refused from None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise Refused from None
        addresses = [str(info[4][0]) for info in found]
        if not addresses or not (
            self.allow_private or all(db.webhooks.is_public_address(a) for a in addresses)
        ):
            raise Refused
        address = addresses[0]
        literal = f"[{address}]" if ":" in address else address
        netloc = f"{literal}:{port}"
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host, port


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
