"""What a benchmark run measures, in the words its driver (``bench.run``) and its
report (``bench.report``) share."""

from __future__ import annotations

from dataclasses import dataclass

SMALL = 10_000  # keys: the default size, and the size target's reference
KEYPLANE_SMALL = "Keyplane, 10,000 keys"
FLOOR_QUERY = "AsyncApp + one query (floor)"
# Usage limits at verify: a key with credits and one auto-applied rate limit, against
# plain verify, on one hot key and spread over 1,000 keys; windows in the database
# (Keyplane) or in Redis (KEYPLANE_REDIS).
VERIFY = "verify: valid"  # plain verify of one key: the headline figure
VERIFY_SPREAD = "verify: valid, 1,000 keys"
LIMITED = "verify: limited (credits + a rate limit)"
LIMITED_SPREAD = "verify: limited, 1,000 keys"
KEYPLANE_REDIS = "Keyplane, windows in Redis"
# Keyplane with KEYPLANE_VERIFY_OPEN: verify without a verifier credential, as before.
KEYPLANE_OPEN = "Keyplane, verify open"
# Keyplane as it was at an earlier git revision (--baseline): what a change costs a verify.
BASELINE = "Keyplane at the baseline revision"


@dataclass(frozen=True)
class Figure:
    database: str
    keys: int
    operation: str
    contender: str
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    rounds: int
