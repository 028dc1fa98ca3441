"""``meta``: any JSON object of the account's own, on a key or an identity, bounded."""

from __future__ import annotations

import json
from typing import Any

from keyplane.db.errors import InvalidInput

MAX_META_BYTES = 4096


def check_meta(meta: dict[str, Any] | None) -> None:
    """At most ``MAX_META_BYTES`` as compact UTF-8 JSON (422 past that)."""
    if meta is None:
        return
    size = len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_META_BYTES:
        raise InvalidInput(
            f"meta is {size} bytes as compact JSON; at most {MAX_META_BYTES}", ["body", "meta"]
        )
