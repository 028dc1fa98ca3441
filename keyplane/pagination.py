"""Keyset cursors, like Stripe's ``starting_after``: the id of a page's last item."""

from __future__ import annotations

MAX_ID = 2**63 - 1


def after(cursor: str | None) -> int | None:
    """The spec's pattern admits only digits; ids beyond int64 simply mean "from the top"."""
    return None if cursor is None else min(int(cursor), MAX_ID)


def next_cursor(last_id: int | None, more: bool) -> str | None:
    return str(last_id) if more and last_id is not None else None
