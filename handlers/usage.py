"""``/v1/usage``, ``/v1/api-keys/{item_id}/usage``: verifies counted, read back.

Admins read the whole account's counts; members the counts of their own keys (a
verify that found no key is nobody's). Counts are written by each worker's flusher
(``db.usage``), so they are complete up to ``KEYPLANE_LAST_USED_RESOLUTION_SECONDS``
ago.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from keyplane import db
from keyplane.db.access import Actor
from keyplane.db.timefmt import parse_rfc3339, rfc3339
from keyplane.handlers.context import current_actor, runtime

KEYS_CANNOT_READ_USAGE = "API keys cannot read usage"


def list(**query: Any) -> dict[str, Any]:  # noqa: A001 - the operationId is usage.list
    actor = current_actor().require_user(KEYS_CANNOT_READ_USAGE)
    return _answer(actor, query, key_id=query.get("key_id"))


def of_key(item_id: int, **query: Any) -> dict[str, Any]:
    actor = current_actor().require_user(KEYS_CANNOT_READ_USAGE)
    db.api_keys.find(db.session.current(), actor.key_scope(), item_id)  # 404 if not theirs
    return _answer(actor, query, key_id=item_id)


def _answer(actor: Actor, query: dict[str, Any], key_id: int | None) -> dict[str, Any]:
    granularity = query.get("granularity", "hour")
    end = _time(query, "to") or db.usage.end_of_bucket(runtime().now(), granularity)
    asked = _time(query, "from") or db.usage.before(end, db.usage.DEFAULT_SPAN[granularity])
    # A longer question is cut to its last MAX_SPAN (the answer's ``from`` says where).
    start = max(asked, db.usage.before(end, db.usage.MAX_SPAN[granularity]))
    group_by = tuple(dict.fromkeys(query.get("group_by", "code").split(",")))
    question = db.usage.Question(
        start=start,
        end=end,
        granularity=granularity,
        group_by=group_by,
        key_id=key_id,
        external_id=query.get("external_id"),
        tag=query.get("tag"),
        owner_id=None if actor.is_admin else actor.user_id,
        limit=query.get("limit", 1000),
    )
    buckets, more = db.usage.report(db.session.current(), actor.account_id, question)
    return {
        "granularity": granularity,
        "from": rfc3339(start),
        "to": rfc3339(end),
        "group_by": [*group_by],
        "items": [
            {
                "time": rfc3339(b.time),
                "key_id": b.key_id,
                "external_id": b.external_id,
                "code": b.code,
                "tag": b.tag,
                "count": b.count,
            }
            for b in buckets
        ],
        "has_more": more,
    }


def _time(query: dict[str, Any], name: str) -> datetime | None:
    return parse_rfc3339(query.get(name), ["query", name])
