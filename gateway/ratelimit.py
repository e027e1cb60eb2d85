"""Rate limiting per organisation: a token bucket per organisation.

The gateway learns a token's organisation from the core's answers (the
"wando-org-id" trailer of every authenticated call, read by OrgLearner after
each call in gateway.resources.Call.invoke); until it has seen one answer for
a token, that token has a bucket of its own. So every token of an
organisation (rotation) shares one bucket. Buckets live in this process only:
with N gateway replicas behind a balancer, an organisation gets up to N times
the rate. Okta retries a 429 after its Retry-After.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# the core's trailer naming the organisation a token authenticated as (core.auth)
ORG_METADATA_KEY = "wando-org-id"
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
        self._orgs: OrderedDict[bytes, bytes] = OrderedDict()  # token hash -> org key

    def learn(self, token: str, org_id: str) -> None:
        """Remember which organisation a token belongs to."""
        key = hashlib.sha256(token.encode()).digest()
        org_key = b"org:" + org_id.encode()
        if self._orgs.get(key) == org_key:
            return
        self._orgs.pop(key, None)
        self._orgs[key] = org_key
        # what the token spent on its own carries over into the organisation's bucket
        own = self._buckets.pop(key, None)
        shared = self._buckets.get(org_key)
        if own is not None and shared is None:
            self._buckets[org_key] = own
        elif own is not None and shared is not None:
            shared.tokens = max(0.0, shared.tokens - (self.burst - own.tokens))
        while len(self._orgs) > MAX_BUCKETS:
            self._orgs.popitem(last=False)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, token: str) -> int:
        """Take one request from the token's bucket: 0 if allowed, else how
        many seconds (at least 1) to wait before retrying."""
        if not self.enabled:
            return 0
        token_key = hashlib.sha256(token.encode()).digest()
        key = self._orgs.get(token_key, token_key)
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


class OrgLearner:
    """Reads the trailers of each successful call that carried a bearer token
    (gateway.resources.Call.invoke): tells the limiter the organisation the
    core named, and `on_accepted` (gateway.authlimit) that the core accepted
    the token. Not a grpc.aio client interceptor: that machinery cost about
    8 % of the gateway's CPU on every request (issue #7)."""

    def __init__(
        self, limiter: RateLimiter, on_accepted: Callable[[str], None] | None = None
    ) -> None:
        self._limiter = limiter
        self._on_accepted = on_accepted

    def learn(self, token: str, trailers: Any) -> None:
        if not token or not (self._limiter.enabled or self._on_accepted is not None):
            return
        for key, value in trailers or ():
            if key == ORG_METADATA_KEY and isinstance(value, str):
                if self._limiter.enabled:
                    self._limiter.learn(token, value)
                if self._on_accepted is not None:
                    self._on_accepted(token)
