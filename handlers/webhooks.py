"""``/v1/webhooks``: an account's endpoints for events, and their deliveries
(``db.webhooks``). Admins only: an endpoint hears of every key of the account."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from keyplane import db
from keyplane.db.access import Actor
from keyplane.db.models import DeliveryState
from keyplane.handlers.context import NO_STORE, current_actor, runtime

USERS_ONLY = "API keys cannot manage webhooks"


def _admin() -> Actor:
    return current_actor().require_admin(key_message=USERS_ONLY)


def list(limit: int = 20, cursor: str | None = None) -> dict[str, Any]:  # noqa: A001
    page = db.webhooks.page(db.session.current(), _admin().account_id, cursor=cursor, limit=limit)
    return {
        "items": [db.webhooks.shown(w) for w in page.items],
        "next_cursor": page.next_cursor,
    }


def create(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    actor, current = _admin(), runtime()
    webhook, secret = db.webhooks.register(
        db.session.current(),
        current.secrets,
        actor.account_id,
        body,
        allow_private=current.webhooks_allow_private,
        actor=actor.audit_actor,
        now=current.now(),
    )
    return db.webhooks.shown(webhook) | {"secret": secret}, 201, NO_STORE


def get(webhook_id: int) -> dict[str, Any]:
    webhook = db.webhooks.get(db.session.current(), _admin().account_id, webhook_id)
    return db.webhooks.shown(webhook)


def update(webhook_id: int, body: dict[str, Any]) -> dict[str, Any]:
    actor, current = _admin(), runtime()
    webhook = db.webhooks.change(
        db.session.current(),
        actor.account_id,
        webhook_id,
        body,
        allow_private=current.webhooks_allow_private,
        actor=actor.audit_actor,
        now=current.now(),
    )
    return db.webhooks.shown(webhook)


def delete(webhook_id: int) -> tuple[None, int]:
    actor = _admin()
    db.webhooks.delete(
        db.session.current(),
        actor.account_id,
        webhook_id,
        actor=actor.audit_actor,
        now=runtime().now(),
    )
    return None, 204


def rotate_secret(
    webhook_id: int, body: dict[str, Any] | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    actor, current = _admin(), runtime()
    overlap = timedelta(seconds=(body or {}).get("overlap_seconds", 86400))
    webhook, secret = db.webhooks.rotate_secret(
        db.session.current(),
        current.secrets,
        actor.account_id,
        webhook_id,
        overlap=overlap,
        actor=actor.audit_actor,
        now=current.now(),
    )
    return db.webhooks.shown(webhook) | {"secret": secret}, 200, NO_STORE


def deliveries(
    webhook_id: int, state: str | None = None, limit: int = 20, cursor: str | None = None
) -> dict[str, Any]:
    session = db.session.current()
    page = db.webhooks.deliveries(
        session,
        _admin().account_id,
        webhook_id,
        state=None if state is None else DeliveryState(state),
        cursor=cursor,
        limit=limit,
    )
    attempts = db.webhooks.attempts_of(session, [d.id for d in page.items])
    return {
        "items": [db.webhooks.shown_delivery(d, attempts[d.id]) for d in page.items],
        "next_cursor": page.next_cursor,
    }


def retry(webhook_id: int, delivery_id: int) -> tuple[dict[str, Any], int]:
    actor, session = _admin(), db.session.current()
    delivery = db.webhooks.retry(
        session,
        actor.account_id,
        webhook_id,
        delivery_id,
        actor=actor.audit_actor,
        now=runtime().now(),
    )
    attempts = db.webhooks.attempts_of(session, [delivery.id])[delivery.id]
    return db.webhooks.shown_delivery(delivery, attempts), 202
