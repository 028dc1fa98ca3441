"""Webhooks: an account's endpoints, the outbox of events, and their deliveries.

An event is written by ``emit`` in the transaction of the change it tells of, with one
delivery for each enabled endpoint of the account that takes its type: a change rolled
back leaves no event, and a committed change cannot lose its event. Senders
(``keyplane.webhooks``) take due deliveries with ``claim``, which leases them: on
PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets two instances claim side by side and never
the same delivery, and on SQLite the writer's lock lets one claim at a time. A sender
that dies mid-delivery holds its lease until it runs out; then another sends the event
again with the same ``webhook-id`` (at least once). Deliveries of one endpoint about
one object (one key) go out in the order of their events: a later one waits while an
earlier one is still pending.
"""

from __future__ import annotations

import base64
import ipaddress
import random
import secrets as random_secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, Exists, exists, func, select, update
from sqlalchemy import delete as delete_statement
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from keyplane import db
from keyplane.db.crypto import Secrets
from keyplane.db.errors import Conflict, InvalidInput, NotFound
from keyplane.db.models import DeliveryState, Webhook, WebhookAttempt, WebhookDelivery, WebhookEvent
from keyplane.db.pages import Page, newest_first
from keyplane.db.timefmt import rfc3339

EVENT_TYPES = (
    "key.created",
    "key.updated",
    "key.rotated",
    "key.revoked",
    "key.disabled",
    "key.expiring",
    "key.leaked",
    "usage.exceeded",
    "user.removed",
)
NOT_FOUND_MESSAGE = "Webhook not found"
DELIVERY_NOT_FOUND = "Delivery not found"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
# When each attempt after the first is due, after the one before: 9 retries over
# 71 h 35 min 5 s, less up to a tenth each (jitter), so never past 3 days. Then dead.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=20),
)
ATTEMPTS = 1 + len(RETRY_DELAYS)
MAX_PER_ACCOUNT = 20
PRIVATE_TARGET = (
    "The URL points into a private network, to loopback or to a link-local address;"
    " Keyplane sends there only with KEYPLANE_WEBHOOKS_ALLOW_PRIVATE=true"
)


def new_secret() -> str:
    """``whsec_`` and 32 random bytes in base64, as Standard Webhooks' libraries take it."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(32)).decode()


def check_url(url: str, *, allow_private: bool) -> None:
    """What can be judged without a lookup: http(s), a host, and no private address
    literal (a name is judged again on each send, by the address it resolves to)."""
    try:
        parts = urlsplit(url)
        hostname, _ = parts.hostname, parts.port  # each raises on what is not one
        ascii_host(hostname or "")
    except ValueError:
        raise InvalidInput("The URL's host or port is not valid", ["body", "url"]) from None
    if parts.scheme.lower() not in ("http", "https") or not hostname:
        raise InvalidInput("The URL must be http:// or https:// with a host", ["body", "url"])
    if parts.username or parts.password:
        raise InvalidInput("The URL must not carry credentials", ["body", "url"])
    if allow_private:
        return
    host = hostname.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost") or _private_literal(host):
        raise InvalidInput(PRIVATE_TARGET, ["body", "url"])


def ascii_host(host: str) -> str:
    """The host as DNS, ``Host`` and TLS take it (IDNA); ValueError if it has none."""
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as error:
        raise ValueError(str(error)) from None


# IPv6 ranges that carry an IPv4 address inside (NAT64, 6to4, Teredo, IPv4-compatible)
# or were once private (site-local): refused, whatever the address inside.
_TUNNELS = tuple(
    ipaddress.ip_network(n)
    for n in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32", "::/96", "fec0::/10")
)


def is_public_address(address: str) -> bool:
    """An address a webhook may go to: globally routable (no loopback, private,
    link-local, shared, multicast or reserved range; IPv4 mapped into IPv6 as IPv4; no
    IPv6 range that reaches an IPv4 address through a tunnel or translator)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif any(ip in network for network in _TUNNELS):
            return False
    return ip.is_global and not ip.is_multicast


def _private_literal(host: str) -> bool:
    try:
        return not is_public_address(host)
    except ValueError:
        pass
    try:  # the forms C's inet_aton reads as IPv4, as resolvers do: 127.1, 0x7f000001
        return not is_public_address(socket.inet_ntoa(socket.inet_aton(host)))
    except OSError:
        return False  # a name, not an address


def _check_types(event_types: Sequence[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(f"Unknown event types: {', '.join(unknown)}", ["body", "event_types"])
    return list(dict.fromkeys(event_types))  # as given, once each


def register(
    session: Session,
    secrets: Secrets,
    account_id: int,
    given: dict[str, Any],
    *,
    allow_private: bool,
    actor: db.audit.Actor,
    now: datetime,
) -> tuple[Webhook, str]:
    """A new endpoint and its signing secret, which is shown this once."""
    check_url(given["url"], allow_private=allow_private)
    held = session.scalar(
        select(func.count()).select_from(Webhook).where(Webhook.account_id == account_id)
    )
    if (held or 0) >= MAX_PER_ACCOUNT:
        raise Conflict(f"An account has at most {MAX_PER_ACCOUNT} webhook endpoints")
    secret = new_secret()
    webhook = Webhook(
        account_id=account_id,
        url=given["url"],
        description=given.get("description"),
        event_types=_check_types(given.get("event_types") or []),
        enabled=given.get("enabled", True),
        secret_sealed=secrets.seal(secret),
        created_at=now,
        updated_at=now,
    )
    session.add(webhook)
    session.flush()
    _audit(session, webhook, actor, "webhook.created", now, shown(webhook))
    return webhook, secret


def page(session: Session, account_id: int, *, cursor: str | None, limit: int) -> Page[Webhook]:
    query = select(Webhook).where(Webhook.account_id == account_id)
    return newest_first(session, query, Webhook.id, cursor=cursor, limit=limit)


def get(session: Session, account_id: int, webhook_id: int, *, lock: bool = False) -> Webhook:
    query = select(Webhook).where(Webhook.id == webhook_id, Webhook.account_id == account_id)
    webhook = session.scalar(query.with_for_update() if lock else query)
    if webhook is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return webhook


def change(
    session: Session,
    account_id: int,
    webhook_id: int,
    given: dict[str, Any],
    *,
    allow_private: bool,
    actor: db.audit.Actor,
    now: datetime,
) -> Webhook:
    webhook = get(session, account_id, webhook_id, lock=True)
    before = shown(webhook)
    if "url" in given:
        check_url(given["url"], allow_private=allow_private)
        webhook.url = given["url"]
    if "event_types" in given:
        webhook.event_types = _check_types(given["event_types"] or [])
    for name in ("description", "enabled"):
        if name in given:
            setattr(webhook, name, given[name])
    after = shown(webhook)
    changed = {f: {"from": before[f], "to": after[f]} for f in after if before[f] != after[f]}
    if changed:
        webhook.updated_at = now
        session.flush()
        _audit(session, webhook, actor, "webhook.updated", now, changed)
    return webhook


def delete(
    session: Session, account_id: int, webhook_id: int, *, actor: db.audit.Actor, now: datetime
) -> None:
    """Gone with its deliveries: nothing more is sent to it."""
    webhook = get(session, account_id, webhook_id, lock=True)
    _audit(session, webhook, actor, "webhook.deleted", now, {"url": webhook.url})
    session.delete(webhook)
    session.flush()


def rotate_secret(
    session: Session,
    secrets: Secrets,
    account_id: int,
    webhook_id: int,
    *,
    overlap: timedelta,
    actor: db.audit.Actor,
    now: datetime,
) -> tuple[Webhook, str]:
    """A new signing secret; for ``overlap`` the old one signs beside it (both
    signatures in one ``webhook-signature``), so a receiver can switch without a gap."""
    webhook = get(session, account_id, webhook_id, lock=True)
    secret = new_secret()
    if overlap > timedelta(0):
        webhook.previous_secret_sealed = webhook.secret_sealed
        webhook.previous_secret_expires_at = now + overlap
    else:
        webhook.previous_secret_sealed = webhook.previous_secret_expires_at = None
    webhook.secret_sealed = secrets.seal(secret)
    webhook.updated_at = now
    session.flush()
    changes = {"previous_secret_valid_until": webhook.previous_secret_expires_at}
    _audit(session, webhook, actor, "webhook.secret_rotated", now, changes)
    return webhook, secret


def signing_secrets(webhook: Webhook, secrets: Secrets, now: datetime) -> list[str]:
    """The secrets that sign a message sent at ``now``: the current one, and the one it
    replaced while its overlap lasts."""
    held = [secrets.unseal(webhook.secret_sealed)]
    if (
        webhook.previous_secret_sealed is not None
        and webhook.previous_secret_expires_at is not None
        and now < webhook.previous_secret_expires_at
    ):
        held.append(secrets.unseal(webhook.previous_secret_sealed))
    return held


def shown(webhook: Webhook) -> dict[str, Any]:
    """A webhook as the API shows it: never its secret."""
    return {
        "id": webhook.id,
        "url": webhook.url,
        "description": webhook.description,
        "event_types": webhook.event_types,
        "enabled": webhook.enabled,
        "previous_secret_valid_until": rfc3339(webhook.previous_secret_expires_at),
        "created_at": rfc3339(webhook.created_at),
        "updated_at": rfc3339(webhook.updated_at),
    }


def _audit(
    session: Session,
    webhook: Webhook,
    actor: db.audit.Actor,
    action: str,
    now: datetime,
    changes: dict[str, Any],
) -> None:
    target = ("webhook", webhook.id)
    db.audit.record(session, webhook.account_id, actor, action, target, now, changes)


# The outbox.

_SILENT = "keyplane.webhooks.silent"  # session.info: accounts known to have no endpoint


def listening(account_id: ColumnElement[int] | InstrumentedAttribute[int]) -> Exists:
    """Whether the account has an enabled endpoint: a column a change's own statement can
    carry (``heard``), where a read of its own would cost a round trip."""
    return exists().where(Webhook.account_id == account_id, Webhook.enabled.is_(True))


def heard(session: Session, account_id: int, *, listening: bool) -> None:
    """What a statement of the transaction found (``listening``): an account without an
    endpoint is not looked up again by this transaction's ``emit``. An endpoint made
    meanwhile hears of changes that begin after it is made, as it would anyway."""
    if not listening:
        session.info.setdefault(_SILENT, set()).add(account_id)


def emit(
    session: Session,
    account_id: int,
    event_type: str,
    data: dict[str, Any] | Callable[[], dict[str, Any]],
    *,
    about: str,
    now: datetime,
    dedupe: str | None = None,
) -> None:
    """Put an event in the outbox, in the caller's transaction, for every enabled
    endpoint of the account that takes ``event_type``; ``about`` names the object
    (``api_key:12``) whose events keep their order. No endpoint: nothing is written.
    An event with a ``dedupe`` already in the outbox is not written again. ``data`` may
    be a function: it is called only when some endpoint listens (a change's cost, for
    an account without webhooks, is one indexed read)."""
    assert event_type in EVENT_TYPES, event_type
    if account_id in session.info.get(_SILENT, ()):
        return
    endpoints = session.execute(
        select(Webhook.id, Webhook.event_types).where(
            Webhook.account_id == account_id, Webhook.enabled.is_(True)
        )
    ).all()
    targets = [id_ for id_, types in endpoints if not types or event_type in types]
    if not targets:
        return
    told = data() if callable(data) else data
    payload = {"type": event_type, "timestamp": rfc3339(now), "data": told}
    event = WebhookEvent(
        uid="msg_" + random_secrets.token_urlsafe(18),
        account_id=account_id,
        type=event_type,
        payload=payload,
        created_at=now,
        dedupe=dedupe,
    )
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:  # told already, by this worker or another
        return
    session.add_all(
        WebhookDelivery(
            webhook_id=target,
            event_id=event.id,
            ordering_key=about,
            state=DeliveryState.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for target in targets
    )
    session.flush()


# Deliveries, as the API shows them and as the sender takes them.


def deliveries(
    session: Session,
    account_id: int,
    webhook_id: int,
    *,
    state: DeliveryState | None,
    cursor: str | None,
    limit: int,
) -> Page[WebhookDelivery]:
    get(session, account_id, webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if state is not None:
        query = query.where(WebhookDelivery.state == state)
    return newest_first(session, query, WebhookDelivery.id, cursor=cursor, limit=limit)


def attempts_of(session: Session, delivery_ids: Sequence[int]) -> dict[int, list[WebhookAttempt]]:
    held: dict[int, list[WebhookAttempt]] = {id_: [] for id_ in delivery_ids}
    query = select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
    for attempt in session.scalars(query.order_by(WebhookAttempt.id)):
        held[attempt.delivery_id].append(attempt)
    return held


def shown_delivery(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "webhook_id": delivery.webhook_id,
        "event_id": delivery.event.uid,
        "event_type": delivery.event.type,
        "state": delivery.state.value,
        "next_attempt_at": (
            rfc3339(delivery.next_attempt_at) if delivery.state is DeliveryState.PENDING else None
        ),
        "last_status_code": delivery.last_status_code,
        "created_at": rfc3339(delivery.created_at),
        "finished_at": rfc3339(delivery.finished_at),
        "attempts": [
            {
                "attempted_at": rfc3339(a.attempted_at),
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "error": a.error,
            }
            for a in attempts
        ],
    }


def retry(
    session: Session,
    account_id: int,
    webhook_id: int,
    delivery_id: int,
    *,
    actor: db.audit.Actor,
    now: datetime,
) -> WebhookDelivery:
    """Send a delivered or dead delivery once more, now, with its event's ``webhook-id``."""
    get(session, account_id, webhook_id)
    delivery = session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook_id)
        .with_for_update(of=WebhookDelivery)
    )
    if delivery is None:
        raise NotFound(DELIVERY_NOT_FOUND)
    if delivery.state is DeliveryState.PENDING:
        raise Conflict("This delivery is still being attempted")
    delivery.state = DeliveryState.PENDING
    delivery.next_attempt_at = now
    delivery.leased_until = delivery.finished_at = None
    delivery.attempts = ATTEMPTS - 1  # one attempt more: delivered, or dead again
    session.flush()
    target = ("webhook", webhook_id)
    changes = {"delivery_id": delivery_id, "event_id": delivery.event.uid}
    db.audit.record(session, account_id, actor, "webhook.delivery_retried", target, now, changes)
    return delivery


@dataclass(frozen=True)
class Outgoing:
    """One claimed delivery: what a sender needs, read in the claiming transaction."""

    delivery_id: int
    webhook_id: int
    url: str
    event_id: str
    body: dict[str, Any]
    secrets: list[str] = field(repr=False)  # empty: none could be read (``claim``)
    leased_until: datetime = field(kw_only=True)


def anything_due(session: Session, now: datetime) -> bool:
    """Whether ``claim`` would find work: a plain read, so an idle sender takes no lock."""
    due = select(WebhookDelivery.id).where(
        WebhookDelivery.state == DeliveryState.PENDING, WebhookDelivery.next_attempt_at <= now
    )
    return session.scalar(due.limit(1)) is not None


def claim(
    session: Session, secrets: Secrets, now: datetime, *, limit: int, lease: timedelta
) -> list[Outgoing]:
    """Lease up to ``limit`` due deliveries to this sender, oldest event first, none of
    them behind a pending earlier delivery about the same object to the same endpoint."""
    # Deliveries whose last attempts were claimed and never settled (their sender died
    # each time, or failed before settling) end dead rather than be tried for ever.
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.state == DeliveryState.PENDING,
            WebhookDelivery.attempts >= ATTEMPTS,
            WebhookDelivery.leased_until <= now,
        )
        .values(state=DeliveryState.DEAD, finished_at=now, leased_until=None)
    )
    earlier = aliased(WebhookDelivery)
    blocked = exists().where(
        earlier.webhook_id == WebhookDelivery.webhook_id,
        earlier.ordering_key == WebhookDelivery.ordering_key,
        earlier.event_id < WebhookDelivery.event_id,
        earlier.state == DeliveryState.PENDING,
    )
    enabled = select(Webhook.id).where(Webhook.enabled.is_(True))
    due = session.scalars(
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.webhook_id.in_(enabled),  # a disabled endpoint's wait
            WebhookDelivery.state == DeliveryState.PENDING,
            WebhookDelivery.next_attempt_at <= now,
            (WebhookDelivery.leased_until.is_(None)) | (WebhookDelivery.leased_until <= now),
            ~blocked,
        )
        .order_by(WebhookDelivery.event_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not due:
        return []
    leased_until = now + lease
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(due))
        .values(leased_until=leased_until, attempts=WebhookDelivery.attempts + 1)
    )
    rows = session.execute(
        select(WebhookDelivery, Webhook)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.id.in_(due))
        .order_by(WebhookDelivery.event_id)
    ).all()
    return [
        Outgoing(
            delivery_id=delivery.id,
            webhook_id=webhook.id,
            url=webhook.url,
            event_id=delivery.event.uid,
            body=delivery.event.payload,
            secrets=_readable_secrets(webhook, secrets, now),
            leased_until=leased_until,
        )
        for delivery, webhook in rows
    ]


def _readable_secrets(webhook: Webhook, secrets: Secrets, now: datetime) -> list[str]:
    """The signing secrets, or none if they were sealed under a server secret no longer
    given (the attempt then fails, this endpoint's alone)."""
    try:
        return signing_secrets(webhook, secrets, now)
    except ValueError:
        return []


@dataclass(frozen=True)
class Outcome:
    """One attempt's end: the status answered (None: none), how long, what went wrong."""

    status_code: int | None
    latency_ms: int
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def settle(session: Session, outgoing: Outgoing, outcome: Outcome, now: datetime) -> None:
    """Record the attempt; then delivered, due again after its delay, or dead. A sender
    whose lease ran out (another may have the delivery now) records only the attempt."""
    delivery = session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == outgoing.delivery_id)
        .with_for_update(of=WebhookDelivery)
    )
    if delivery is None:
        return  # the endpoint was deleted meanwhile
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            attempted_at=now,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=None if outcome.error is None else outcome.error[:200],
        )
    )
    if (
        delivery.state is not DeliveryState.PENDING
        or delivery.leased_until != outgoing.leased_until
    ):
        session.flush()
        return
    delivery.last_status_code = outcome.status_code
    delivery.leased_until = None
    if outcome.delivered:
        delivery.state, delivery.finished_at = DeliveryState.DELIVERED, now
    elif delivery.attempts >= ATTEMPTS:
        delivery.state, delivery.finished_at = DeliveryState.DEAD, now
    else:
        delay = RETRY_DELAYS[delivery.attempts - 1]
        delivery.next_attempt_at = now + delay * random.uniform(0.9, 1.0)  # noqa: S311
    session.flush()


def forget_before(session: Session, cutoff: datetime) -> None:
    """Events older than ``cutoff`` whose deliveries have all ended, with their deliveries."""
    open_delivery = exists().where(
        WebhookDelivery.event_id == WebhookEvent.id,
        WebhookDelivery.state == DeliveryState.PENDING,
    )
    old = select(WebhookEvent.id).where(WebhookEvent.created_at < cutoff, ~open_delivery)
    session.execute(delete_statement(WebhookEvent).where(WebhookEvent.id.in_(old)))
