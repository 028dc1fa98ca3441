"""``/v1/audit-events``: the account's audit trail (account admins)."""

from __future__ import annotations

from typing import Any

from keyplane import db
from keyplane.db.models import AuditEvent
from keyplane.db.timefmt import rfc3339
from keyplane.handlers.context import current_actor


def list(  # noqa: A001 - the operationId is audit_events.list
    action: str | None = None,
    actor: str | None = None,
    key_id: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    admin = current_actor().require_admin(key_message="API keys cannot read the audit trail")
    actor_type, _, actor_id = (actor or "").partition(":")
    page = db.audit.page(
        db.session.current(),
        admin.account_id,
        action=action,
        actor=db.audit.Actor(actor_type, int(actor_id)) if actor else None,
        key_id=key_id,
        cursor=cursor,
        limit=limit,
    )
    return {"items": [_shape(event) for event in page.items], "next_cursor": page.next_cursor}


def _shape(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "time": rfc3339(event.created_at),
        "account_id": event.account_id,
        "actor": {
            "type": event.actor_type,
            "id": event.actor_id,
            "address": event.client_address,
        },
        "action": event.action,
        "target": {"type": event.target_type, "id": event.target_id},
        "changes": event.changes,
    }
