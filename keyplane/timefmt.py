"""RFC 3339 in and out: always UTC with ``Z`` on the way out."""

from __future__ import annotations

from datetime import UTC, datetime

from keyplane.errors import InvalidInput


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_rfc3339(value: str | None, loc: list[str | int]) -> datetime | None:
    """The schema has checked the syntax; this also refuses what Python cannot hold."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("no offset")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(
            "Input should be a valid RFC 3339 date-time with an offset", loc, "datetime_parsing"
        ) from None
