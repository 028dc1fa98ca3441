"""Rate-limit windows in Redis (``KEYPLANE_REDIS_URL``), shared by every worker and
every instance that points at the same Redis.

One Lua script counts all the windows of one use at once: Redis runs a script alone,
so it reads every window, and only if the use fits in all of them adds its cost to
each. That is ``db.limits.Ledger``'s all-or-nothing in one round trip, with
no read-then-write across clients. A window's counter is the key
``keyplane:rl:<bucket>:<window start>``, dropped by Redis a second after the window ends.

When Redis cannot be reached within ``timeout`` seconds, a use is neither allowed nor
counted elsewhere: the request answers 503 with ``Retry-After`` (``Unavailable``).
Falling back to the database would count the same limit in two places.

Credits stay in the database: they are durable state, set and shown by the API.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from keyplane.db.errors import Unavailable
from keyplane.db.limits import Counted, Ledger, Window

REDIS_UNAVAILABLE = "Rate limits are unavailable (Redis cannot be reached); try again shortly"
RETRY_AFTER_SECONDS = 1
# KEYS: one counter per window. ARGV: per window its limit, cost and expiry (ms since
# 1970), then "1" to count or "0" to look only. Returns 1 or 0 (fits), then each
# window's uses after.
_COUNT = """
local n = #KEYS
local fits = 1
local used = {}
for i = 1, n do
  local limit, cost = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used[i] + math.max(cost, 1) > limit then fits = 0 end
end
if fits == 1 and ARGV[3 * n + 1] == '1' then
  for i = 1, n do
    local cost = tonumber(ARGV[3 * i - 1])
    if cost > 0 then
      used[i] = redis.call('INCRBY', KEYS[i], cost)
      redis.call('PEXPIREAT', KEYS[i], ARGV[3 * i])
    end
  end
end
table.insert(used, 1, fits)
return used
"""


class RedisWindows:
    in_database = False

    def __init__(self, url: str, timeout: float) -> None:
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=None,  # one try within the request's budget: a 503, never a long wait
            health_check_interval=30,
        )
        self._script = self._client.register_script(_COUNT)

    def count(self, ledger: Ledger, windows: Sequence[Window], now_ms: int) -> list[Counted]:
        return self._run(windows, now_ms, count=True)

    def peek(self, ledger: Ledger, windows: Sequence[Window], now_ms: int) -> list[Counted]:
        return self._run(windows, now_ms, count=False)

    def ping(self) -> None:
        """Raise ``Unavailable`` unless Redis answers (readiness)."""
        try:
            self._client.ping()
        except redis.RedisError as error:
            raise Unavailable(REDIS_UNAVAILABLE, RETRY_AFTER_SECONDS) from error

    def close(self) -> None:
        self._client.close()

    def _run(self, windows: Sequence[Window], now_ms: int, *, count: bool) -> list[Counted]:
        if not windows:
            return []
        keys = [f"keyplane:rl:{w.bucket}:{w.start_ms(now_ms)}" for w in windows]
        args: list[int | str] = []
        for window in windows:
            args += [window.limit, window.cost, window.end_ms(now_ms) + 1000]
        try:
            fits, *used = self._script(keys=keys, args=[*args, "1" if count else "0"])
        except redis.RedisError as error:
            raise Unavailable(REDIS_UNAVAILABLE, RETRY_AFTER_SECONDS) from error
        return [
            Counted(window, int(uses), exceeded=not fits and not window.fits(int(uses)))
            for window, uses in zip(windows, used, strict=True)
        ]
