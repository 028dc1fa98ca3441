"""Key material, password hashing and user tokens.

API keys look like GitHub's tokens: ``kp_`` + 30 random base62 characters (178 bits)
+ a 6-character base62 CRC32 of the random part. The checksum lets ``parse_api_key``
reject mistyped or made-up keys without touching the database, and lets secret
scanners recognise a leaked key. Only ``HMAC-SHA256(server secret, key)`` is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import argon2
import jwt
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyplane.db import usernames
from keyplane.db.errors import Unavailable

API_KEY_PREFIX = "kp_"
_ALPHABET = string.digits + string.ascii_letters
_RANDOM_LENGTH = 30
_CHECKSUM_LENGTH = 6
API_KEY_LENGTH = len(API_KEY_PREFIX) + _RANDOM_LENGTH + _CHECKSUM_LENGTH
_WELL_FORMED = re.compile(
    re.escape(API_KEY_PREFIX) + f"[0-9A-Za-z]{{{_RANDOM_LENGTH + _CHECKSUM_LENGTH}}}"
)
# The public part shown in lists: the product prefix and 8 random characters.
DISPLAY_PREFIX_LENGTH = len(API_KEY_PREFIX) + 8

_passwords = argon2.PasswordHasher()  # argon2id with the library's RFC 9106 defaults
# A real argon2id hash that verifies nothing: spent on unknown usernames so that
# they take as long as a wrong password.
_DUMMY_PASSWORD_HASH = _passwords.hash(secrets.token_urlsafe(16))


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(_ALPHABET[remainder])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), _CHECKSUM_LENGTH)


def generate_api_key() -> str:
    random_part = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return API_KEY_PREFIX + random_part + _checksum(random_part)


def is_well_formed_api_key(key: str) -> bool:
    """Prefix, length, alphabet and checksum: everything checkable without the database."""
    if not _WELL_FORMED.fullmatch(key):  # _ALPHABET's characters, checked in C
        return False
    body = key[len(API_KEY_PREFIX) :]
    random_part, checksum = body[:_RANDOM_LENGTH], body[_RANDOM_LENGTH:]
    return hmac.compare_digest(_checksum(random_part), checksum)


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LENGTH]


@dataclass(frozen=True)
class _Keys:
    """Purpose-bound keys derived from one server secret."""

    key_hashing: bytes
    token_signing: bytes
    login_throttling: bytes
    sealing: bytes  # AES-256-GCM: secrets Keyplane must read back (webhook signing secrets)

    @classmethod
    def derive(cls, server_secret: str) -> _Keys:
        root = server_secret.encode()
        return cls(
            key_hashing=hmac.digest(root, b"keyplane api-key digest v1", "sha256"),
            token_signing=hmac.digest(root, b"keyplane user-token signing v1", "sha256"),
            login_throttling=hmac.digest(root, b"keyplane login throttle v1", "sha256"),
            sealing=hmac.digest(root, b"keyplane sealed secrets v1", "sha256"),
        )


@dataclass(frozen=True)
class Secrets:
    """The server secret's keys, and those of the secrets it replaced (still accepted).

    New tokens and digests use the current secret. Tokens signed with a previous one
    verify until they expire; keys whose digest was made with a previous one verify,
    and their digest is renewed with the current secret when they are next used.
    """

    current: _Keys
    previous: tuple[_Keys, ...] = ()

    @classmethod
    def derive(cls, server_secret: str, previous: Sequence[str] = ()) -> Secrets:
        return cls(_Keys.derive(server_secret), tuple(_Keys.derive(old) for old in previous))

    def api_key_digest(self, key: str) -> str:
        return _digest(self.current.key_hashing, key)

    def api_key_digests(self, key: str) -> tuple[str, ...]:
        """The key's digest under each accepted secret, the current one first."""
        return (self.api_key_digest(key), *(_digest(k.key_hashing, key) for k in self.previous))

    def seal(self, secret: str) -> str:
        """``secret`` encrypted under the current server secret (a random nonce each
        time), for a secret Keyplane must use again: a webhook's signing secret."""
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self.current.sealing).encrypt(nonce, secret.encode(), b"keyplane")
        return (nonce + sealed).hex()

    def unseal(self, sealed: str) -> str:
        """What ``seal`` sealed, under the current secret or a previous one."""
        raw = bytes.fromhex(sealed)
        for keys in (self.current, *self.previous):
            try:
                return AESGCM(keys.sealing).decrypt(raw[:12], raw[12:], b"keyplane").decode()
            except InvalidTag:
                continue
        raise ValueError("sealed under none of the server's secrets")

    def login_subject(self, username: str) -> str:
        """What the login throttle and audit trail know of a username: a keyed hash of
        its sign-in key, so that ``Alice`` and ``alice`` are throttled as one."""
        return _digest(self.current.login_throttling, usernames.sign_in_key(username))

    def login_address(self, address: str) -> str:
        """What the login throttle knows of a client address: a keyed hash, apart from
        every username's."""
        return _digest(self.current.login_throttling, f"\0address {address}")

    def issue_user_token(
        self, user_id: int, ttl: timedelta, now: datetime | None = None, generation: int = 0
    ) -> str:
        """``generation``: the user's token generation; a password change ends the older."""
        issued = now or datetime.now(UTC)
        claims = {
            "sub": str(user_id),
            "iat": issued,
            "exp": issued + ttl,
            "typ": "access",
            "gen": generation,
        }
        return jwt.encode(claims, self.current.token_signing, algorithm="HS256")

    def user_id_from_token(self, token: str) -> int | None:
        """The user id of a valid, unexpired token; None for anything else."""
        subject = self.token_subject(token)
        return None if subject is None else subject[0]

    def token_subject(self, token: str) -> tuple[int, int] | None:
        """(user id, token generation) of a valid, unexpired token; None for anything else.
        Tokens from before generations were counted are generation 0."""
        for keys in (self.current, *self.previous):
            try:
                claims = jwt.decode(
                    token,
                    keys.token_signing,
                    algorithms=["HS256"],
                    options={"require": ["sub", "exp", "iat"]},
                )
            except jwt.PyJWTError:
                continue
            subject, generation = claims.get("sub"), claims.get("gen", 0)
            if claims.get("typ") != "access" or not isinstance(subject, str):
                return None
            if not subject.isdigit() or type(generation) is not int:
                return None
            return int(subject), generation
        return None


def _digest(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def ecdsa_signed(public_key_pem: str, signature: bytes, message: bytes) -> bool:
    """``signature`` (DER) is ECDSA with SHA-256 of ``message`` under the PEM key, as
    GitHub signs its secret scanning reports. A key that is not an EC key signs nothing."""
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode())
    except ValueError:
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def hash_password(password: str) -> str:
    return _passwords.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists (pass None for an unknown user)."""
    try:
        return _passwords.verify(password_hash or _DUMMY_PASSWORD_HASH, password) and (
            password_hash is not None
        )
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False


class PasswordHashing:
    """argon2id, with a cap on how many hashes run at once in this process.

    Each takes 64 MiB and tens of milliseconds of a core, and anyone can ask for one
    (a login with any username costs a hash): the excess waits up to ``wait_seconds``
    for a slot, then is refused with a 503 and ``Retry-After``.
    """

    def __init__(self, concurrency: int, wait_seconds: float) -> None:
        self._slots = threading.BoundedSemaphore(concurrency)
        self._wait_seconds = wait_seconds

    @contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self._wait_seconds):
            raise Unavailable("Too many password checks at once; try again shortly", 1)
        try:
            yield
        finally:
            self._slots.release()

    def hash(self, password: str) -> str:
        with self._slot():
            return hash_password(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        with self._slot():
            return verify_password(password_hash, password)
