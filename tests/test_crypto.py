"""Key material: format, checksum, digests; user tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from keyplane.db import crypto

SECRETS = crypto.Secrets.derive("one-server-secret-of-sufficient-length-123")


def test_generated_keys_have_the_product_prefix_and_a_valid_checksum():
    keys = {crypto.generate_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("kp_")
        assert len(key) == crypto.API_KEY_LENGTH == 39
        assert crypto.is_well_formed_api_key(key)
        assert crypto.display_prefix(key) == key[:11]


@given(position=st.integers(min_value=3, max_value=38), replacement=st.sampled_from("aZ09"))
def test_any_single_character_typo_is_caught_by_the_checksum(position, replacement):
    key = crypto.generate_api_key()
    typo = key[:position] + replacement + key[position + 1 :]
    if typo != key:
        assert not crypto.is_well_formed_api_key(typo)


@given(st.text(max_size=60))
def test_arbitrary_text_is_never_taken_for_a_key(text):
    assert not crypto.is_well_formed_api_key(text) or text.startswith("kp_")


def test_the_digest_depends_on_the_server_secret_and_is_not_the_key():
    key = crypto.generate_api_key()
    other = crypto.Secrets.derive("another-server-secret-of-sufficient-length")
    assert SECRETS.api_key_digest(key) != other.api_key_digest(key)
    assert len(SECRETS.api_key_digest(key)) == 64
    assert key not in SECRETS.api_key_digest(key)


def test_user_tokens_expire_and_are_bound_to_the_secret():
    token = SECRETS.issue_user_token(7, timedelta(minutes=1))
    assert SECRETS.user_id_from_token(token) == 7
    other = crypto.Secrets.derive("another-server-secret-of-sufficient-length")
    assert other.user_id_from_token(token) is None
    old = SECRETS.issue_user_token(
        7, timedelta(minutes=1), now=datetime.now(UTC) - timedelta(hours=1)
    )
    assert SECRETS.user_id_from_token(old) is None
    assert SECRETS.user_id_from_token("kp_" + "a" * 36) is None


def test_passwords_verify_only_with_the_right_password():
    hashed = crypto.hash_password("s3cret-password")
    assert hashed.startswith("$argon2id$")
    assert crypto.verify_password(hashed, "s3cret-password")
    assert not crypto.verify_password(hashed, "wrong")
    assert not crypto.verify_password(None, "s3cret-password")
