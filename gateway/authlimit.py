"""Throttling repeated failed authentication, per client address.

Why: a SCIM token carries 256 random bits, so guessing one is hopeless; what a
client sending bad tokens over and over (a brute-force attempt, or an identity
provider retrying with a revoked token) does achieve is a core call and a
database lookup per attempt. This caps that, and makes it visible as 429s.

How: each client address has a token bucket of failed authentications,
`WANDO_AUTH_FAILURE_BURST` at once, refilled at `WANDO_AUTH_FAILURE_PER_SECOND`.
A failure is any 401: no or a malformed `Authorization` header, or a token the
core refused. Once an address's bucket is empty, its requests get 429 with
Retry-After *before* anything is sent to the core — except requests whose
token the core has accepted recently ("vouched for": every successful core
call vouches for its token, in gateway.resources.Call.invoke). So an identity
provider that shares its egress address with a failing client (Okta's shared
egress, a NAT, a proxy) keeps working, and only tokens the core has never
accepted wait.

Limits, on purpose:
- Buckets live in this process: N gateway processes allow N times the rate
  (unlike the organisations' rate limit, core.ratelimit, which is fleet-wide).
- The address is the TCP peer's. Behind a reverse proxy every client shares the
  proxy's address (X-Forwarded-For is not trusted: anyone can send it); the
  vouching above keeps working clients unaffected, new tokens wait their turn.
- The core has no such limiter: its gRPC port serves the gateway and Wando's own
  services on a private network, and a failed authentication there costs one
  indexed lookup by hash (core.tokens) and nothing else.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_BUCKETS = 100_000  # least recently used buckets beyond this are forgotten (they refill)

DETAIL = "Too many failed authentications from this address; retry after the given delay"


@dataclass
class _Bucket:
    tokens: float
    updated: float


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AuthFailures:
    """Failed authentications per client address, and the tokens the core vouched for."""

    def __init__(
        self, rate_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_second
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._vouched: OrderedDict[bytes, None] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def wait(self, address: str, token: str | None) -> int:
        """0 if a request may go on; else how many seconds (at least 1) its
        address must wait. Vouched-for tokens never wait. `token`: the bearer
        token, None when the request has none (as gateway.middlewares reads it)."""
        if not self.enabled:
            return 0
        bucket = self._refilled(address)  # the usual case, no recent failure: None
        if bucket is None or bucket.tokens >= 1.0:
            return 0
        if token is not None and _key(token) in self._vouched:
            return 0
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))

    def failed(self, address: str, token: str | None) -> None:
        """Count a failed authentication against the address. Requests that were
        let through together may overdraw the bucket (down to -burst): each of
        them failed, and the address pays for each."""
        if not self.enabled:
            return
        if token is not None:
            self._vouched.pop(_key(token), None)  # revoked or expired since
        bucket = self._refilled(address) or _Bucket(float(self.burst), self._clock())
        bucket.tokens = max(-float(self.burst), bucket.tokens - 1.0)
        self._buckets[address] = bucket
        while len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)

    def vouch(self, token: str) -> None:
        """The core accepted this token (called after each successful core call)."""
        key = _key(token)
        self._vouched.pop(key, None)
        self._vouched[key] = None
        while len(self._vouched) > MAX_BUCKETS:
            self._vouched.popitem(last=False)

    def _refilled(self, address: str) -> _Bucket | None:
        bucket = self._buckets.pop(address, None)
        if bucket is None:
            return None
        now = self._clock()
        bucket.tokens = min(
            float(self.burst), bucket.tokens + max(now - bucket.updated, 0.0) * self.rate
        )
        bucket.updated = now
        if bucket.tokens >= self.burst:
            return None  # full again: forget it
        self._buckets[address] = bucket  # most recently used last
        return bucket
