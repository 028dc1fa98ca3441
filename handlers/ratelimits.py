"""``/v1/ratelimit``: limits on things that are not keys (an IP, a sign-up form, a user).

``limit`` is on the data plane (``async``): one use counted, all in one transaction
of its own that confirms the caller still may spend the account's namespaces (an
admin, or a verifier key: ``db.limits.limit_apart``). The overrides are management, on the control
plane.
"""

from __future__ import annotations

from typing import Any

import connexion
from anyio import to_thread

from keyplane import db
from keyplane.db.access import Actor, resolve_actor
from keyplane.db.timefmt import rfc3339
from keyplane.handlers.context import current_actor, current_principal, note, runtime

ADMINS_ONLY = "Only an account's admins spend or set its standalone rate limits"
SPENDERS_ONLY = (
    "Only an account's admins, or its API keys holding keyplane.verify, spend its "
    "standalone rate limits"
)


async def limit(body: dict[str, Any]) -> dict[str, Any]:
    current = runtime()
    actor = resolve_actor(current_principal(), connexion.request.headers.get("x-account-id"))
    authority = actor.verifier_authority(SPENDERS_ONLY)
    note(account_id=actor.account_id)
    asked = db.limits.Asked(
        namespace=body["namespace"],
        identifier=body["identifier"],
        limit=body["limit"],
        duration_ms=body["duration_ms"],
        cost=body.get("cost", 1),
    )
    now = current.now()
    outcome = await to_thread.run_sync(
        db.limits.limit_apart,
        current.windows,
        authority,
        asked,
        now,
        limiter=current.spenders,
    )
    counted = outcome.windows[0]
    return {
        "success": outcome.refused is None,
        "limit": counted.window.limit,
        "remaining": counted.remaining,
        "reset_at": rfc3339(counted.window.reset_at(int(now.timestamp() * 1000))),
    }


def put_override(
    namespace: str, identifier: str, body: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    actor = _admin(current_actor())
    override, created = db.limits.put_override(
        db.session.current(),
        actor.account_id,
        namespace,
        identifier,
        body,
        actor=actor.audit_actor,
        now=runtime().now(),
    )
    shown = {
        "namespace": override.namespace,
        "identifier": override.identifier,
        "limit": override.limit,
        "duration_ms": override.duration_ms,
    }
    return shown, 201 if created else 200


def delete_override(namespace: str, identifier: str) -> tuple[None, int]:
    actor = _admin(current_actor())
    db.limits.delete_override(
        db.session.current(),
        actor.account_id,
        namespace,
        identifier,
        actor=actor.audit_actor,
        now=runtime().now(),
    )
    return None, 204


def _admin(actor: Actor) -> Actor:
    return actor.require_admin(ADMINS_ONLY, key_message=ADMINS_ONLY)
