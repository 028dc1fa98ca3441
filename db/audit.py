"""The audit trail: who (user or key) did what to which target, in which account."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    FromClause,
    Insert,
    String,
    Table,
    bindparam,
    insert,
    literal,
    select,
)
from sqlalchemy.orm import Session

from keyplane.db.models import AuditEvent
from keyplane.db.pages import Page, newest_first


@dataclass(frozen=True)
class Actor:
    type: str  # "user", "api_key", "anonymous", "operator" or "scanner"
    id: int | None

    @classmethod
    def user(cls, user_id: int) -> Actor:
        return cls("user", user_id)


# The address of the client whose request is being served: set by the wiring for each
# request (the peer, or the client a trusted reverse proxy names), read by ``record``.
CLIENT_ADDRESS: ContextVar[str | None] = ContextVar("keyplane_client_address", default=None)

ANONYMOUS = Actor("anonymous", None)
OPERATOR = Actor("operator", None)  # the keyplane CLI
SCANNER = Actor("scanner", None)  # a secret scanner's leak report (``db.leaks``)


def record(
    session: Session,
    account_id: int | None,
    actor: Actor,
    action: str,
    target: tuple[str, str | int | None],
    now: datetime,
    changes: dict[str, Any] | None = None,
) -> None:
    """In ``account_id``'s trail: ``actor`` did ``action`` to ``target`` at ``now``."""
    changes = {field: jsonable(value) for field, value in (changes or {}).items()}
    session.add(AuditEvent(**event(account_id, actor, action, target, now, changes)))
    session.flush()


def event(
    account_id: Any,
    actor: Actor,
    action: str,
    target: tuple[str, Any],
    now: Any,
    changes: Any = None,
    *,
    address: Any = None,
) -> dict[str, Any]:
    """An audit event's columns, as ``record`` writes them. Any value may be a SQL
    expression instead (a column, a parameter), for a statement that writes the event
    itself (``db.api_keys``' PATCH of plain fields, whose ``bound`` actor it takes)."""
    target_type, target_id = target
    if target_id is not None and not isinstance(target_id, ColumnElement):
        target_id = str(target_id)
    return {
        "account_id": account_id,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "changes": changes,
        "created_at": now,
        "client_address": CLIENT_ADDRESS.get() if address is None else address,
    }


def written_by_select(
    event: dict[str, Any], *where: ColumnElement[bool], joined: FromClause | None = None
) -> Insert:
    """An ``INSERT ... SELECT`` that writes ``event`` for each row it selects (from
    ``joined``, where ``where`` holds): its values may be those rows' columns; a plain
    value is a literal of its column's type."""
    table = cast(Table, AuditEvent.__table__)  # not the entity, which would take
    # the statement's parameters for rows to insert
    rows = select(
        *(
            value if isinstance(value, ColumnElement) else literal(value, table.c[name].type)
            for name, value in event.items()
        )
    ).where(*where)
    if joined is not None:
        rows = rows.select_from(joined)
    return insert(table).from_select(list(event), rows)


def bound() -> tuple[Actor, BindParameter[Any], BindParameter[Any]]:
    """The actor, time and address of ``event`` as parameters of a statement built
    once (``bound_values`` gives them for one request)."""
    actor = Actor(bindparam("audit_actor_type"), bindparam("audit_actor_id"))  # type: ignore[arg-type]
    at = bindparam("audit_at", type_=AuditEvent.__table__.c.created_at.type)
    return actor, at, bindparam("audit_address", type_=String)


def bound_values(actor: Actor, now: datetime) -> dict[str, Any]:
    return {
        "audit_actor_type": actor.type,
        "audit_actor_id": actor.id,
        "audit_at": now,
        "audit_address": CLIENT_ADDRESS.get(),
    }


def page(
    session: Session,
    account_id: int,
    *,
    action: str | None,
    actor: Actor | None,
    key_id: int | None,
    cursor: str | None,
    limit: int,
) -> Page[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.account_id == account_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if actor is not None:
        query = query.where(AuditEvent.actor_type == actor.type, AuditEvent.actor_id == actor.id)
    if key_id is not None:
        query = query.where(
            AuditEvent.target_type == "api_key", AuditEvent.target_id == str(key_id)
        )
    return newest_first(session, query, AuditEvent.id, cursor=cursor, limit=limit)


def jsonable(value: Any) -> Any:
    """``value`` as JSON holds it: times as RFC 3339 UTC."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
