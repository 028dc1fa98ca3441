"""``/v1/account/policy``: the current account's key policy (``db.policies``)."""

from __future__ import annotations

from typing import Any

from keyplane import db
from keyplane.db.policies import Policy
from keyplane.handlers.context import current_actor, runtime


def get_policy() -> dict[str, Any]:
    actor = current_actor().require_user("API keys cannot read the account's policy")
    return _shape(db.policies.of(db.session.current(), actor.account_id))


def put_policy(body: dict[str, Any]) -> dict[str, Any]:
    actor = current_actor().require_admin()
    members = body.get("member_permissions")
    policy = db.policies.replace(
        db.session.current(),
        actor.account_id,
        Policy(
            max_key_lifetime_seconds=body.get("max_key_lifetime_seconds"),
            expiry_required=body.get("expiry_required", False),
            member_permissions=None if members is None else tuple(members),
            on_leak=body.get("on_leak", "revoke"),
        ),
        actor=actor.audit_actor,
        now=runtime().now(),
    )
    return _shape(policy)


def _shape(policy: Policy) -> dict[str, Any]:
    members = policy.member_permissions
    return {
        "max_key_lifetime_seconds": policy.max_key_lifetime_seconds,
        "expiry_required": policy.expiry_required,
        "member_permissions": None if members is None else list(members),
        "on_leak": policy.on_leak,
    }
