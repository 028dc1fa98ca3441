"""``/v1/account/policy``: the current account's key policy (``db.policies``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from keyplane import db
from keyplane.db.policies import Policy
from keyplane.handlers.context import current_actor, runtime

KEYS_CANNOT_CHANGE = "API keys cannot change the account's policy"


def get_policy() -> dict[str, Any]:
    actor = current_actor().require_user("API keys cannot read the account's policy")
    return _shape(db.policies.of(db.session.current(), actor.account_id))


def put_policy(body: dict[str, Any]) -> dict[str, Any]:
    """The whole policy: an omitted field takes its default."""
    return _change(lambda _: dataclasses.replace(Policy(), **_fields(body)))


def patch_policy(body: dict[str, Any]) -> dict[str, Any]:
    """The fields sent; the others stay as they are."""
    return _change(lambda before: dataclasses.replace(before, **_fields(body)))


def _change(new: Callable[[Policy], Policy]) -> dict[str, Any]:
    actor = current_actor().require_admin(key_message=KEYS_CANNOT_CHANGE)
    policy = db.policies.change(
        db.session.current(), actor.account_id, new, actor=actor.audit_actor, now=runtime().now()
    )
    return _shape(policy)


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """The body's fields as the policy holds them (a body holds only what was sent)."""
    fields = dict(body)
    if fields.get("member_permissions") is not None:
        fields["member_permissions"] = tuple(fields["member_permissions"])
    return fields


def _shape(policy: Policy) -> dict[str, Any]:
    members = policy.member_permissions
    return {
        "max_key_lifetime_seconds": policy.max_key_lifetime_seconds,
        "expiry_required": policy.expiry_required,
        "member_permissions": None if members is None else list(members),
        "on_leak": policy.on_leak,
    }
