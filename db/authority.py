"""Authority at the moment of a change: the caller may still do what they are doing.

A request is authenticated when its headers arrive, before its body is read, and a
body may follow seconds later. Whoever asked may meanwhile have been demoted, removed
from the account, deactivated, or had their password changed. So every transaction
that writes re-reads, before it commits and under share locks that a demotion,
removal, deactivation or password change must wait for, that the caller

* is still an active user whose token generation is the one their token carries, and
* (acting in an account) is still a member of it, with the role they acted with.

Otherwise nothing is committed, and the request answers as a fresh one would: 401
for a credential that no longer works, 403 for a standing that no longer allows it.

The request's unit of work claims the caller for its session and confirms at the
end (``keyplane.transactions``). A change that alters the caller's own standing
(stepping down, leaving, a new password) confirms first, under its own locks, so that
it is judged by the standing it was asked with. Reads keep the check at the headers.

Lock order: a key's change locks the key, then share-locks its owner's and the
caller's rows (here, at the end); membership changes lock the account row, then
confirm. Nothing locks a key after a person's row, so no two orders meet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import GenerativeSelect

from keyplane.db.errors import Forbidden, Unauthorized
from keyplane.db.models import (
    ApiKey,
    ApiKeyPermission,
    KeyStatus,
    Membership,
    Role,
    User,
    key_status_clause,
)

INVALID_CREDENTIALS = "Could not validate credentials"
NO_LONGER_A_MEMBER = "You are no longer a member of this account"
NO_LONGER_ADMIN = "You are no longer an admin of this account"
KEYS_CHANGE_NOTHING = "API keys cannot change anything here"
NO_LONGER_HOLDS = "This API key no longer holds the permission this takes"

_Query = TypeVar("_Query", bound=GenerativeSelect)
_CLAIMED = "keyplane.authority"
_CONFIRMED = "keyplane.authority.confirmed"


@dataclass(frozen=True)
class Authority:
    """Who asked, as their credential told it when the request began."""

    user_id: int
    token_generation: int | None  # None for an API key principal
    key_id: int | None = None
    account_id: int | None = None  # the account they act in, once resolved
    role: Role | None = None  # the role they acted with there
    right: str | None = None  # an API key's: the permission it acts by (keyplane.verify)

    def acting_in(self, account_id: int, role: Role | None) -> Authority:
        return replace(self, account_id=account_id, role=role)

    def by_right(self, right: str) -> Authority:
        return replace(self, right=right)


def claim(session: Session, authority: Authority) -> None:
    """The caller whose authority this session's changes rest on."""
    session.info[_CLAIMED] = authority


def confirm(
    session: Session, *, own_row_for_update: bool = False, now: datetime | None = None
) -> None:
    """Raise 401/403 unless the claimed caller still stands as they did; once a session.

    ``own_row_for_update``: the transaction goes on to update the caller's own user
    row (a password change), so lock it for that at once: two share locks on one row,
    each waiting to update it, would deadlock.
    """
    authority: Authority | None = session.info.get(_CLAIMED)
    if authority is None or session.info.get(_CONFIRMED):
        return  # the operator's command line, or confirmed already
    if authority.key_id is not None:
        # An API key writes only by a right of Keyplane's own (a verifier counting a
        # standalone limit): still active, its owner still in the account, still held.
        if authority.right is None:
            raise Forbidden(KEYS_CHANGE_NOTHING)
        _judge_key(session, authority, now or datetime.now(UTC))
        session.info[_CONFIRMED] = True
        return
    query = select(User.is_active, User.token_generation).where(User.id == authority.user_id)
    if authority.account_id is None:
        _judge_user(session.execute(_locked(query, own_row_for_update)).one_or_none(), authority)
    else:
        # One round trip when all is well: the user and their membership, joined.
        in_account = query.add_columns(Membership.role).join(
            Membership,
            (Membership.user_id == User.id) & (Membership.account_id == authority.account_id),
        )
        standing = session.execute(_locked(in_account, own_row_for_update)).one_or_none()
        if standing is None:
            # Not a member: but a credential that no longer works says so first (401).
            user = session.execute(_locked(query, own_row_for_update)).one_or_none()
            _judge_user(user, authority)
            raise Forbidden(NO_LONGER_A_MEMBER)
        _judge_user(standing, authority)
        if authority.role is Role.ADMIN and standing.role is not Role.ADMIN:
            raise Forbidden(NO_LONGER_ADMIN)
    session.info[_CONFIRMED] = True


@dataclass(frozen=True)
class Standing:
    """``confirm``'s judgement of a user acting in an account, as a condition that the
    statement making a change carries itself (``clause``, built once per ``as_admin``;
    ``parameters`` for one request): the claimed user is still active, on the token
    generation they asked with, a member of the account with the role they acted
    with; their rows share-locked for it. Correlated to the changed row, it is judged
    (and its locks taken) after that row is locked, in the lock order above. The
    session counts as confirmed once the change holding it is written (``confirmed``).
    """

    as_admin: bool
    parameters: dict[str, Any]

    @staticmethod
    def clause(account_id: ColumnElement[int], *, as_admin: bool) -> ColumnElement[bool]:
        member = (
            select(User.id)
            .join(Membership, Membership.user_id == User.id)
            .where(
                User.id == bindparam("standing_user_id"),
                User.is_active.is_(True),
                User.token_generation == bindparam("standing_generation"),
                Membership.account_id == bindparam("standing_account_id"),
                Membership.account_id == account_id,
            )
        )
        if as_admin:
            member = member.where(Membership.role == Role.ADMIN)
        return member.with_for_update(read=True).exists()


def standing(session: Session) -> Standing | None:
    """The claimed caller's ``Standing``; None where ``confirm`` must judge: an API key,
    the operator, or no account."""
    authority: Authority | None = session.info.get(_CLAIMED)
    if authority is None or authority.key_id is not None or authority.account_id is None:
        return None
    return Standing(
        authority.role is Role.ADMIN,
        {
            "standing_user_id": authority.user_id,
            "standing_generation": authority.token_generation,
            "standing_account_id": authority.account_id,
        },
    )


def confirmed(session: Session) -> None:
    """A change carrying ``standing`` was written: its judgement held at that moment."""
    session.info[_CONFIRMED] = True


def _judge_key(session: Session, authority: Authority, now: datetime) -> None:
    key = ApiKey.__table__.c
    member = (
        select(Membership.user_id)
        .where(Membership.account_id == key.account_id, Membership.user_id == key.user_id)
        .exists()
    )
    held = (
        select(ApiKeyPermission.api_key_id)
        .where(
            ApiKeyPermission.api_key_id == key.id,
            ApiKeyPermission.permission_id == authority.right,
        )
        .exists()
    )
    # The key's row share-locked: a revocation or a change of its permissions waits.
    standing = session.execute(
        select(
            key_status_clause(KeyStatus.ACTIVE, now).label("active"),
            User.is_active,
            member.label("member"),
            held.label("held"),
        )
        .join_from(ApiKey, User, User.id == ApiKey.user_id)
        .where(ApiKey.id == authority.key_id, ApiKey.account_id == authority.account_id)
        .with_for_update(read=True, of=ApiKey)
    ).one_or_none()
    if standing is None or not (standing.active and standing.is_active and standing.member):
        raise Unauthorized(INVALID_CREDENTIALS)
    if not standing.held:
        raise Forbidden(NO_LONGER_HOLDS)


def _locked(query: _Query, for_update: bool) -> _Query:
    """Share-locked rows wait for a demotion, removal, deactivation or password change
    in progress, and make one that starts later wait for this transaction."""
    if for_update:
        return query.with_for_update(key_share=True)
    return query.with_for_update(read=True)


def _judge_user(
    standing: Row[bool, int] | Row[bool, int, Role] | None, authority: Authority
) -> None:
    if standing is None or not standing.is_active:
        raise Unauthorized(INVALID_CREDENTIALS)
    if standing.token_generation != authority.token_generation:
        raise Unauthorized(INVALID_CREDENTIALS)
