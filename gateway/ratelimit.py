"""Rate limiting per organisation: a token bucket per SCIM bearer token.

The gateway cannot tell a token's organisation without asking the core, so it
keys buckets by the token's SHA-256 (one token per IdP connection, so in
practice per organisation; an organisation rotating tokens briefly has two).
Buckets live in this process only: with N gateway replicas behind a balancer,
an organisation gets up to N times the rate. Okta retries a 429 after its
Retry-After.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_BUCKETS = 100_000  # least recently used buckets beyond this are forgotten (they refill)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate_per_second
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, token: str) -> int:
        """Take one request from the token's bucket: 0 if allowed, else how
        many seconds (at least 1) to wait before retrying."""
        if not self.enabled:
            return 0
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
        else:
            elapsed = max(now - bucket.updated, 0.0)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        self._buckets[key] = bucket  # most recently used last
        while len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))
