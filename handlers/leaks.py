"""``/v1/leaks``: leak reports from GitHub's secret scanning partner program and from
the operator's own scanners (``db.leaks``)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import connexion
import flask

from keyplane import db
from keyplane.db import crypto
from keyplane.db.errors import Unauthorized
from keyplane.handlers.context import runtime

UNSIGNED = "A report must be signed: GITHUB-PUBLIC-KEY-IDENTIFIER and GITHUB-PUBLIC-KEY-SIGNATURE"
BAD_SIGNATURE = "The report's signature does not verify under a key GitHub publishes"


def github(body: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Acted on only when GitHub signed exactly these bytes, and only once."""
    headers = connexion.request.headers
    identifier = headers.get("github-public-key-identifier")
    signature = headers.get("github-public-key-signature")
    if not identifier or not signature:
        raise Unauthorized(UNSIGNED)
    current = runtime()
    public_key = current.github_leak_keys(identifier)
    try:
        signed = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        signed = b""
    raw = flask.request.get_data(cache=True)
    if public_key is None or not crypto.ecdsa_signed(public_key, signed, raw):
        raise Unauthorized(BAD_SIGNATURE)
    session, now = db.session.current(), current.now()
    db.leaks.remember(session, raw, now)
    found = [db.leaks.Found.from_api(one) for one in body]
    return db.leaks.act_on(session, current.secrets, found, reporter="github", now=now)


def report(body: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The operator's own scanners, with ``KEYPLANE_LEAK_REPORT_TOKEN``."""
    current = runtime()
    found = [db.leaks.Found.from_api(one) for one in body]
    return db.leaks.act_on(
        db.session.current(), current.secrets, found, reporter="operator", now=current.now()
    )
