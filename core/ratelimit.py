"""Each organisation's SCIM rate limit, across the whole fleet, in PostgreSQL.

The gateway says which limit applies by sending "wando-rate-limit: <requests
per second> <burst>" (its WANDO_RATE_LIMIT_PER_SECOND and _BURST) with each
SCIM call; the core charges the organisation the token authenticated as
(core.auth.Guard.scim) with one atomic upsert of the organisation's row in
rate_limits, and answers RESOURCE_EXHAUSTED (RateLimited, with the seconds to
wait) beyond it. However many gateways and cores serve an organisation, they
draw from the same row, so the limit is the organisation's, not N times it.

GCRA (the generic cell rate algorithm, a token bucket kept as one number): a
request at time `now` conforms if tat - now <= tolerance, where tat is the
theoretical arrival time stored for the organisation, the emission interval
T = 1 / rate, and tolerance = (burst - 1) * T; a conforming request moves
tat to max(tat, now) + T. So `burst` requests may come at once, then one
every T. A refused one waits tat - now - tolerance. Time is the database's.

If the store does not answer within CHARGE_TIMEOUT_SECONDS or fails, the
request passes (fails open) and a warning is logged: the limit protects the
service from a runaway client, and is not worth refusing good requests for.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid

import asyncpg
from prometheus_client import Counter

from common.wire import RATE_LIMIT_METADATA_KEY as METADATA_KEY
from core.errors import InvalidArgument, RateLimited
from core.rpc import Ctx

log = logging.getLogger(__name__)


CHARGE_TIMEOUT_SECONDS = 0.5
WARN_EVERY_SECONDS = 10.0

FAILED_OPEN = Counter(
    "wando_rate_limit_failed_open_total",
    "SCIM calls let through because the rate limit's store did not answer",
)

# $1 org_id, $2 the emission interval T (seconds), $3 the tolerance (seconds)
CHARGE = """
INSERT INTO rate_limits AS r (org_id, tat, admitted)
VALUES ($1, extract(epoch FROM statement_timestamp())::float8 + $2, true)
ON CONFLICT (org_id) DO UPDATE SET
    admitted = r.tat - extract(epoch FROM statement_timestamp())::float8 <= $3,
    tat = CASE
        WHEN r.tat - extract(epoch FROM statement_timestamp())::float8 <= $3
        THEN greatest(r.tat, extract(epoch FROM statement_timestamp())::float8) + $2
        ELSE r.tat
    END
RETURNING admitted, tat - extract(epoch FROM statement_timestamp())::float8 AS ahead
"""


def requested_limit(context: Ctx) -> tuple[float, int] | None:
    """(requests per second, burst) the caller asks to be charged against, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == METADATA_KEY and isinstance(value, str):
            rate, _, burst = value.strip().partition(" ")
            try:
                parsed = float(rate), int(burst)
            except ValueError:
                parsed = (0.0, 0)
            if not (parsed[0] > 0 and math.isfinite(parsed[0]) and parsed[1] >= 1):
                raise InvalidArgument(
                    f"{METADATA_KEY} must be '<requests per second> <burst>', both positive",
                    field=METADATA_KEY,
                )
            return parsed
    return None


class RateLimits:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._warned = 0.0

    async def charge(self, org_id: uuid.UUID, rate: float, burst: int) -> None:
        """Count one request of the organisation; RateLimited beyond its limit."""
        interval = 1.0 / rate
        tolerance = (burst - 1) * interval
        try:
            async with asyncio.timeout(CHARGE_TIMEOUT_SECONDS):
                async with self._pool.acquire() as conn:
                    row = await conn.fetchrow(CHARGE, org_id, interval, tolerance)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            FAILED_OPEN.inc()
            now = time.monotonic()
            if now - self._warned > WARN_EVERY_SECONDS:
                self._warned = now
                log.warning("rate limit not checked, request let through: %s", type(exc).__name__)
            return
        assert row is not None
        if not row["admitted"]:
            wait = max(1, math.ceil(row["ahead"] - tolerance))
            raise RateLimited(
                "too many requests for this organisation; retry after the given delay",
                retry_after=wait,
            )
