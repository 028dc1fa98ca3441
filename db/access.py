"""Who is calling (authentication) and in which account, with which role (access).

Pure of any web framework: the security functions and the handlers call it with
header values; the rules of the README's "Credentials" and "Account" live here once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from keyplane import db
from keyplane.db import crypto
from keyplane.db.authority import INVALID_CREDENTIALS, Authority
from keyplane.db.errors import Forbidden, Unauthorized
from keyplane.db.lookups import Code, Found, Lookups, judge
from keyplane.db.models import Role
from keyplane.db.permissions import VERIFY
from keyplane.db.usage import Usage

NOT_AUTHENTICATED = "Not authenticated"
KEYS_CANNOT_MANAGE_KEYS = "API keys cannot create, update, rotate or revoke API keys"
CANNOT_VERIFY = f"Only an account admin, or an API key holding {VERIFY}, may verify keys"
NOT_THIS_KEYS_ACCOUNT = "This API key does not belong to that account"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user, or an API key acting for its owner."""

    user_id: int
    key_id: int | None = None
    key_account_id: int | None = None
    # A user's accounts and roles, oldest first, as read when the request began.
    memberships: tuple[tuple[int, Role], ...] = ()
    token_generation: int | None = None  # a user token's ``gen`` claim
    key_permissions: tuple[str, ...] = ()  # an API key's, as read when the request began

    def authority(self) -> Authority:
        return Authority(self.user_id, self.token_generation, self.key_id)

    @property
    def is_api_key(self) -> bool:
        return self.key_id is not None

    @property
    def kind(self) -> str:
        return "api_key" if self.is_api_key else "user"

    def audit_actor(self) -> db.audit.Actor:
        if self.key_id is not None:
            return db.audit.Actor("api_key", self.key_id)
        return db.audit.Actor.user(self.user_id)

    def require_user(self, message: str = KEYS_CANNOT_MANAGE_KEYS) -> Principal:
        if self.is_api_key:
            raise Forbidden(message)
        return self


@dataclass(frozen=True)
class Actor:
    """A principal acting in one account."""

    principal: Principal
    account_id: int
    role: Role | None  # None for an API key principal

    @property
    def user_id(self) -> int:
        return self.principal.user_id

    @property
    def audit_actor(self) -> db.audit.Actor:
        return self.principal.audit_actor()

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def authority(self) -> Authority:
        return self.principal.authority().acting_in(self.account_id, self.role)

    def key_scope(self) -> db.api_keys.Scope:
        """Admins reach every key of the account; members their own."""
        owner = None if self.is_admin else self.user_id
        return db.api_keys.Scope(account_id=self.account_id, owner_id=owner)

    def key_caller(self) -> db.api_keys.Caller:
        return db.api_keys.Caller(self.key_scope(), self.audit_actor, self.user_id, self.is_admin)

    def require_user(self, message: str = KEYS_CANNOT_MANAGE_KEYS) -> Actor:
        self.principal.require_user(message)
        return self

    def verifier_authority(self, message: str = CANNOT_VERIFY) -> Authority:
        """An admin's, or an API key's that holds ``keyplane.verify`` (by that right,
        confirmed again where it is used: ``db.authority``); 403 for anyone else."""
        if self.principal.is_api_key and VERIFY in self.principal.key_permissions:
            return self.authority().by_right(VERIFY)
        if not self.is_admin:
            raise Forbidden(message)
        return self.authority()

    def require_admin(
        self,
        message: str = "Only account admins can do this",
        key_message: str = "API keys cannot do this",
    ) -> Actor:
        self.require_user(key_message)
        if not self.is_admin:
            raise Forbidden(message)
        return self


async def authenticate(
    lookups: Lookups,
    usage: Usage,
    secrets: crypto.Secrets,
    *,
    authorization: str | None,
    api_key: str | None,
    now: datetime,
) -> Principal:
    """Every credential present must be valid (401 otherwise); an API key wins over a user."""
    credentials: list[str] = []
    if api_key is not None:
        if not api_key.startswith(crypto.API_KEY_PREFIX):
            raise Unauthorized(INVALID_CREDENTIALS)  # X-API-Key carries API keys only
        credentials.append(api_key)
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized(INVALID_CREDENTIALS)
        credentials.append(value.strip())
    if not credentials:
        raise Unauthorized(NOT_AUTHENTICATED)
    principals = [
        await _principal(lookups, usage, secrets, credential, now) for credential in credentials
    ]
    return next((p for p in principals if p.is_api_key), principals[0])


async def _principal(
    lookups: Lookups, usage: Usage, secrets: crypto.Secrets, credential: str, now: datetime
) -> Principal:
    if credential.startswith(crypto.API_KEY_PREFIX):
        if not crypto.is_well_formed_api_key(credential):
            raise Unauthorized(INVALID_CREDENTIALS)
        digests = secrets.api_key_digests(credential)
        found = await lookups.key(digests)
        if found is None or judge(found, (), now) is not Code.VALID:
            raise Unauthorized(INVALID_CREDENTIALS)
        usage.note(found, digests[0], now)
        return Principal(
            user_id=found.user_id,
            key_id=found.key_id,
            key_account_id=found.account_id,
            key_permissions=found.permissions,
        )
    subject = secrets.token_subject(credential)
    user = await lookups.user(subject[0]) if subject is not None else None
    # A token from before the user's last password change is over.
    if user is None or not user.active or subject is None or subject[1] != user.token_generation:
        raise Unauthorized(INVALID_CREDENTIALS)
    return Principal(
        user_id=user.user_id, memberships=user.memberships, token_generation=subject[1]
    )


def resolve_actor(principal: Principal, account_header: str | None) -> Actor:
    """The x-account-id header when given, else the caller's first account."""
    if principal.key_account_id is not None:
        if account_header is not None and account_header != str(principal.key_account_id):
            raise Forbidden(NOT_THIS_KEYS_ACCOUNT)
        return Actor(principal, principal.key_account_id, role=None)
    memberships = principal.memberships
    if account_header is None:
        if not memberships:
            raise Forbidden("You are not a member of any account")
        account_id, role = memberships[0]
        return Actor(principal, account_id, role)
    for account_id, role in memberships:
        if str(account_id) == account_header:
            return Actor(principal, account_id, role)
    raise Forbidden("You are not a member of that account")


async def verifying(
    lookups: Lookups,
    usage: Usage,
    secrets: crypto.Secrets,
    *,
    credential: str,
    account_header: str | None,
    digests: Sequence[str],
    now: datetime,
) -> tuple[int, Found | None]:
    """The account a verifier verifies for, and the key under test (None: no such key).

    The verifier is an API key holding ``keyplane.verify`` (401 if it is not a working
    key, 403 if it lacks the right), looked up in the same query as the key under test,
    or an admin's token (403 for a member), whose user is read alongside the key's
    lookup. ``digests`` is empty for a key that cannot exist: nothing is looked up.
    """
    if credential.startswith(crypto.API_KEY_PREFIX):
        if not crypto.is_well_formed_api_key(credential):
            raise Unauthorized(INVALID_CREDENTIALS)
        own = secrets.api_key_digests(credential)
        if digests:
            verifier, found = await lookups.keys(own, digests)
        else:
            verifier, found = await lookups.key(own), None
        code = judge(verifier, (VERIFY,), now)
        if verifier is None or code not in (Code.VALID, Code.INSUFFICIENT_PERMISSIONS):
            raise Unauthorized(INVALID_CREDENTIALS)
        usage.note(verifier, own[0], now)
        if code is Code.INSUFFICIENT_PERMISSIONS:
            raise Forbidden(CANNOT_VERIFY)
        if account_header is not None and account_header != str(verifier.account_id):
            raise Forbidden(NOT_THIS_KEYS_ACCOUNT)
        return verifier.account_id, found
    user = _principal(lookups, usage, secrets, credential, now)
    if digests:
        # Both to the end, so that a failure of either is the one raised, never left behind.
        principal, found = _first_failure(
            *await asyncio.gather(user, lookups.key(digests), return_exceptions=True)
        )
    else:
        principal, found = await user, None
    actor = resolve_actor(principal, account_header)
    if not actor.is_admin:
        raise Forbidden(CANNOT_VERIFY)
    return actor.account_id, found


def _first_failure(
    principal: Principal | BaseException, found: Found | BaseException | None
) -> tuple[Principal, Found | None]:
    for outcome in (principal, found):
        if isinstance(outcome, BaseException):
            raise outcome
    assert isinstance(principal, Principal) and not isinstance(found, BaseException)
    return principal, found
