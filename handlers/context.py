"""What a handler knows about its request beyond its parameters.

The wiring (``keyplane``) binds these per request in context variables, which reach
both the event loop and the worker thread that runs a handler. Handlers read them
here; they never import the wiring, nor each other: this module is what they share.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import connexion
from anyio import CapacityLimiter
from connexion.context import context

from keyplane import db
from keyplane.db import crypto
from keyplane.db.access import Actor, Principal, resolve_actor
from keyplane.db.batches import Batches
from keyplane.db.limits import DatabaseWindows, Outcome, Spend, Windows
from keyplane.db.logins import SignIn
from keyplane.db.lookups import Lookups
from keyplane.db.usage import Usage

# An answer that carries a token (RFC 6749 §5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class Runtime:
    """The service's long-lived parts, the same for every request of one process;
    the wiring builds it from the settings (``keyplane.app.Service``)."""

    secrets: crypto.Secrets
    lookups: Lookups  # verification's and authentication's reads, on long-lived connections
    usage: Usage  # notes of key use, written off the request path
    passwords: crypto.PasswordHashing  # argon2id, a few at a time
    sign_in: SignIn  # token lifetime and the login limit
    request_timeout_seconds: float  # a request's budget (readiness answers within half)
    # Spends of usage limits run in threads, KEYPLANE_THREADS at a time: each holds a
    # pooled connection, and the pools' sum must stay within the database's.
    spenders: CapacityLimiter
    # A verify's spend, committed with the spends that queued beside it (``db.batches``).
    spends: Batches[Spend, Outcome]
    windows: Windows = field(default_factory=DatabaseWindows)  # where rate limits count
    metrics_here: bool = True  # GET /metrics on the API's port
    metrics_token: str | None = field(default=None, repr=False)  # ... for this token only
    webhooks_allow_private: bool = False  # endpoints in private networks (KEYPLANE_WEBHOOKS_*)
    # GitHub's public key under an identifier (None: unknown), and the operator scanners'
    # token: for leak reports.
    github_leak_keys: Callable[[str], str | None] = field(default=lambda _: None)
    leak_report_token: str | None = field(default=None, repr=False)

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)


@dataclass
class Facts:
    """What the request log line tells about the caller, filled in as they become known."""

    operation_id: str | None = None
    principal: str | None = None
    account_id: int | None = None


_runtime: ContextVar[Runtime] = ContextVar("keyplane_runtime")
_facts: ContextVar[Facts] = ContextVar("keyplane_request_facts")


def runtime() -> Runtime:
    return _runtime.get()


def bind(runtime: Runtime) -> Token[Runtime]:
    return _runtime.set(runtime)


def unbind(token: Token[Runtime]) -> None:
    _runtime.reset(token)


def start_facts() -> tuple[Facts, Token[Facts]]:
    facts = Facts()
    return facts, _facts.set(facts)


def end_facts(token: Token[Facts]) -> None:
    _facts.reset(token)


def note(**fields: Any) -> None:
    """Add what became known (``principal``, ``account_id``) to the request's facts."""
    facts = _facts.get(None)
    if facts is not None:
        for name, value in fields.items():
            setattr(facts, name, value)


def current_principal() -> Principal:
    principal: Principal = context["token_info"]["principal"]
    return principal


def claimed_principal() -> Principal | None:
    """The authenticated caller, if the operation has one (sign-in and verify do not)."""
    token_info = context.get("token_info")
    return None if token_info is None else token_info.get("principal")


def current_actor() -> Actor:
    """The caller in the account the request acts in. Whatever the request then writes
    rests on that standing, confirmed again before it commits (``db.authority``)."""
    actor = resolve_actor(current_principal(), connexion.request.headers.get("x-account-id"))
    note(account_id=actor.account_id)
    db.authority.claim(db.session.current(), actor.authority())
    return actor
