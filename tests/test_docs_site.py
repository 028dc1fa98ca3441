"""The documentation site at /docs/, once built: its own files only, under a policy
that allows its own inline scripts by their hash (Chromium reads it in
``tests/test_swagger_ui.py``)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace

from keyplane.app import create_app

INLINE = b"document.body.dataset.ready = 'yes'"
PAGE = b"<!doctype html><title>Keyplane</title><script>" + INLINE + b"</script>"


def test_the_site_is_served_with_its_policy(settings, tmp_path):
    (tmp_path / "index.html").write_bytes(PAGE)
    app = create_app(replace(settings, docs_site=str(tmp_path)))
    with app.test_client() as client:
        moved = client.get("/docs", follow_redirects=False)
        assert (moved.status_code, moved.headers["location"]) == (308, "/docs/")
        page = client.get("/docs/")
        assert (page.status_code, page.content) == (200, PAGE)
        policy = page.headers["Content-Security-Policy"]
        digest = base64.b64encode(hashlib.sha256(INLINE).digest()).decode()
        assert f"script-src 'self' 'sha256-{digest}';" in policy
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        assert page.headers["X-Frame-Options"] == "DENY"
        assert client.get("/docs/../keyplane.db").status_code == 404


def test_without_a_built_site_docs_are_not_found(client):
    assert client.get("/docs/").status_code == 404
