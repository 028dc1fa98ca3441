"""GitHub's public keys for secret scanning reports (``POST /v1/leaks/github``).

``KEYPLANE_GITHUB_LEAK_KEYS`` names a file, or an https:// URL (GitHub's own is
https://api.github.com/meta/public_keys/secret_scanning), holding GitHub's JSON:
``{"public_keys": [{"key_identifier": ..., "key": "-----BEGIN PUBLIC KEY-----..."}]}``.
The keys are read once and again when a report names an identifier not yet known (GitHub
rotates its keys), at most once a minute, so a stream of made-up identifiers cannot
make Keyplane fetch on every request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import httpx

logger = logging.getLogger("keyplane.leaks")

REREAD_AT_MOST_EVERY_SECONDS = 60.0


class GitHubKeys:
    def __init__(self, source: str | None) -> None:
        self.source = source
        self._keys: dict[str, str] = {}
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def __call__(self, identifier: str) -> str | None:
        """The PEM public key GitHub signs with under ``identifier``; None: unknown."""
        if self.source is None:
            return None
        with self._lock:
            if identifier not in self._keys and self._may_read_again():
                self._read()
            return self._keys.get(identifier)

    def _may_read_again(self) -> bool:
        return self._read_at is None or (
            time.monotonic() - self._read_at >= REREAD_AT_MOST_EVERY_SECONDS
        )

    def _read(self) -> None:
        assert self.source is not None
        self._read_at = time.monotonic()
        try:
            if self.source.startswith("https://"):
                text = httpx.get(self.source, timeout=5.0).text  # no redirects: https only
            else:
                text = Path(self.source).read_text()
            listed = json.loads(text)["public_keys"]
            self._keys = {str(k["key_identifier"]): str(k["key"]) for k in listed}
        except (OSError, ValueError, KeyError, TypeError, httpx.HTTPError) as error:
            # The keys known before stay: a report signed with one still verifies.
            logger.warning("GitHub's leak report keys not read (%s)", type(error).__name__)
