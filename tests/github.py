"""GitHub's side of secret scanning, played by a key pair made here: Keyplane is
configured with its public half, as it would be with GitHub's published keys."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"


class GitHub:
    def __init__(self, key_id: str = KEY_ID) -> None:
        self.key_id = key_id
        self.private_key = ec.generate_private_key(ec.SECP256R1())

    def publish(self, directory: Path) -> Path:
        """The public keys as GitHub's API lists them, in a file for KEYPLANE_GITHUB_LEAK_KEYS."""
        pem = (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        listed = {"public_keys": [{"key_identifier": self.key_id, "key": pem, "is_current": True}]}
        path = directory / "github-keys.json"
        path.write_text(json.dumps(listed))
        return path

    def signed(self, report: Any, key_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The report's bytes and the headers GitHub sends them with."""
        body = json.dumps(report).encode()
        signature = self.private_key.sign(body, ec.ECDSA(hashes.SHA256()))
        return body, {
            "GITHUB-PUBLIC-KEY-IDENTIFIER": key_id or self.key_id,
            "GITHUB-PUBLIC-KEY-SIGNATURE": base64.b64encode(signature).decode(),
            "Content-Type": "application/json",
        }


def found(*tokens: str, url: str = "https://github.com/octo/repo/blob/main/.env") -> list[dict]:
    """A report of ``tokens``, found at ``url``."""
    return [
        {"token": t, "type": "keyplane_api_key", "url": url, "source": "content"} for t in tokens
    ]
