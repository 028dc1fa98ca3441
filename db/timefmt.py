"""RFC 3339 in and out: always UTC with ``Z`` on the way out."""

from __future__ import annotations

from datetime import UTC, datetime

from keyplane.db.errors import InvalidInput


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
    except ValueError:
        raise InvalidInput(
            "Input should be a valid RFC 3339 date-time with an offset", loc, "datetime_parsing"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidInput("Input should have a timezone offset", loc, "timezone_aware")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # Valid RFC 3339 just past Python's range once in UTC (0001-01-01T00:30:00+01:00,
        # 9999-12-31T23:59:59-01:00): the nearest representable instant means the same.
        return (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=UTC)
