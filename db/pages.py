"""Keyset pagination, newest first, with cursors like Stripe's ``starting_after``.

A cursor is the id of the previous page's last row; the spec lets only digits through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

MAX_ID = 2**63 - 1
Row = TypeVar("Row")


@dataclass(frozen=True)
class Page(Generic[Row]):
    items: list[Row]
    next_cursor: str | None


def newest_first(
    session: Session,
    query: Select[Row],
    id_column: InstrumentedAttribute[int],
    *,
    cursor: str | None,
    limit: int,
) -> Page[Row]:
    if cursor is not None:
        # Ids beyond int64 simply mean "from the top".
        query = query.where(id_column < min(int(cursor), MAX_ID))
    # A query of one entity gives its objects; one of columns, its rows.
    result = session.execute(query.order_by(id_column.desc()).limit(limit + 1))
    rows: list[Any] = list(result.scalars() if len(query.column_descriptions) == 1 else result)
    items = rows[:limit]
    last: Any = items[-1] if items else None
    return Page(items, str(last.id) if len(rows) > limit and last is not None else None)
