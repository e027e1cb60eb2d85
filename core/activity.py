"""Activity: every SCIM request an organisation's token made (issue #18), for
Wando's support staff.

The gateway sends entries in batches (ActivityService.RecordActivity, gateway
credential). Each carries the SHA-256 of the bearer token presented, which is
what scim_tokens stores: INSERT_BATCH attributes it to that token's
organisation in the same statement — revoked and expired tokens included —
and drops entries whose hash matches no token (they are no organisation's
activity). Staff read it with AdminService.ListActivity / WatchActivity.

Pruning (Pruner, in each core process): rows older than the retention, and
each organisation's oldest rows beyond its cap, in batches of PRUNE_BATCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from core import organizations, paging
from core.auth import Guard
from core.errors import InvalidArgument
from core.organizations import timestamp
from core.rpc import Ctx
from wando.provisioning.v1 import activity_pb2, activity_pb2_grpc
from wando.provisioning.v1 import admin_service_pb2 as admin_pb

if TYPE_CHECKING:
    from core.db import Conn

log = logging.getLogger(__name__)

MAX_BATCH = 1000
CLIENTS = ("okta", "entra", "auth0", "other")
# what one entry may hold, whatever a gateway sends
LIMITS = {
    "request_id": 128,
    "user_agent": 200,
    "method": 16,
    "route": 200,
    "resource_id": 200,
    "filter": 1000,
    "scim_type": 40,
    "detail": 1000,
}

INSERT_BATCH = """
INSERT INTO activity (org_id, request_time, token_id, request_id, client, user_agent, method,
                      route, resource_id, filter, status, scim_type, detail, latency_us)
SELECT t.org_id, e.request_time, t.token_id, e.request_id, e.client, e.user_agent, e.method,
       e.route, e.resource_id, e.filter, e.status, e.scim_type, e.detail, e.latency_us
FROM unnest($1::bytea[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::smallint[], $11::text[], $12::text[],
            $13::integer[])
     AS e(token_hash, request_time, request_id, client, user_agent, method, route,
          resource_id, filter, status, scim_type, detail, latency_us)
JOIN scim_tokens t ON t.token_hash = e.token_hash
"""

COLUMNS = """a.activity_id, a.org_id, a.request_time, a.token_id, a.request_id, a.client,
       a.user_agent, a.method, a.route, a.resource_id, a.filter, a.status, a.scim_type,
       a.detail, a.latency_us"""

# $1 org, $2 from, $3 before, $4 errors only, $5 status, $6 user (text),
# $7 user's id when $6 names a user, $8 client, then the page position
MATCHES = """
a.org_id = $1
  AND a.request_time >= $2 AND a.request_time < $3
  AND (NOT $4 OR a.status >= 400)
  AND ($5 = 0 OR a.status = $5)
  AND ($6 = '' OR a.resource_id = $6 OR (a.resource_id = $7 AND $7 <> '')
       OR strpos(lower(a.filter), lower($6)) > 0 OR strpos(lower(a.detail), lower($6)) > 0)
  AND ($8 = '' OR a.client = $8)
"""

SELECT_PAGE = f"""
SELECT {COLUMNS}
FROM activity a
WHERE {MATCHES}
  AND ($9::timestamptz IS NULL OR (a.request_time, a.activity_id) < ($9, $10))
ORDER BY a.request_time DESC, a.activity_id DESC
LIMIT $11
"""

# a watch's look: the entries after a position, oldest first (see watch())
SELECT_AFTER = f"""
SELECT {COLUMNS}
FROM activity a
WHERE {MATCHES}
  AND (a.request_time, a.activity_id) > ($9, $10)
ORDER BY a.request_time, a.activity_id
LIMIT $11
"""

SELECT_USER_ID = """
SELECT user_id::text FROM users WHERE org_id = $1 AND lower(user_name) = lower($2)
"""

SELECT_ORGS_WITH_ACTIVITY = """
SELECT o.org_id FROM organizations o
WHERE EXISTS (SELECT 1 FROM activity a WHERE a.org_id = o.org_id)
"""

DELETE_OLDER = """
DELETE FROM activity
WHERE org_id = $1 AND (request_time, activity_id) IN (
    SELECT request_time, activity_id FROM activity
    WHERE org_id = $1 AND request_time < $2
    ORDER BY request_time
    LIMIT $3)
"""

# the time of the organisation's newest row beyond its cap, if it has one
SELECT_CAP_BOUNDARY = """
SELECT request_time, activity_id FROM activity
WHERE org_id = $1
ORDER BY request_time DESC, activity_id DESC
OFFSET $2 LIMIT 1
"""

DELETE_BEYOND_CAP = """
DELETE FROM activity
WHERE org_id = $1 AND (request_time, activity_id) IN (
    SELECT request_time, activity_id FROM activity
    WHERE org_id = $1 AND (request_time, activity_id) <= ($2, $3)
    ORDER BY request_time
    LIMIT $4)
"""

PRUNE_BATCH = 1000
PRUNE_EVERY_SECONDS = 60.0
# how far back a watch's start may reach; how late after its requests a
# gateway's batch may commit and still be streamed
WATCH_WINDOW = timedelta(seconds=30)
WATCH_LAG = timedelta(seconds=10)
WATCH_PAGE = 1000
WATCH_POLL_SECONDS = 1.0
NEVER = datetime(1, 1, 1, tzinfo=UTC)
FOREVER = datetime(9999, 1, 1, tzinfo=UTC)


# credential shapes a client might paste where it should not (a filter, a User-Agent)
_SECRET = re.compile(r"wando_(?:scim|admin|svc|gw)_[0-9A-Za-z_-]{8,}|(?i:bearer)\s+\S{8,}")
WITHHELD = "[withheld]"


def _clip(name: str, value: str) -> str:
    """A field as stored: no credential-shaped text, no NUL (PostgreSQL's text
    refuses it, and with it the whole batch), at most LIMITS[name] long."""
    if not value:  # most entries have no filter, error or resource id
        return value
    value = _SECRET.sub(WITHHELD, value).replace("\x00", "\ufffd")
    if name == "filter" and "password" in value.lower():
        return WITHHELD  # a filter naming password may hold one
    limit = LIMITS[name]
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _when(stamp: Timestamp) -> datetime:
    """A request's time; one outside the years 1 to 9999 (no gateway sends it)
    is taken as now rather than failing the batch."""
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return datetime.now(UTC)


async def record(conn: Conn, requests: Sequence[activity_pb2.RecordedRequest]) -> int:
    """Store a batch; returns how many entries matched a token."""
    if len(requests) > MAX_BATCH:
        raise InvalidArgument(f"at most {MAX_BATCH} requests a batch", field="requests")
    columns: list[list[object]] = [[] for _ in range(13)]
    for r in requests:
        e = r.entry
        row = (
            r.token_sha256,
            _when(e.request_time),
            _clip("request_id", e.request_id),
            e.client if e.client in CLIENTS else "other",
            _clip("user_agent", e.user_agent),
            _clip("method", e.method),
            _clip("route", e.route),
            _clip("resource_id", e.resource_id),
            _clip("filter", e.filter),
            max(0, min(e.status, 999)),
            _clip("scim_type", e.scim_type),
            _clip("detail", e.detail),
            max(0, min(e.latency.ToMicroseconds(), 2**31 - 1)),
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    status = await conn.execute(INSERT_BATCH, *columns)
    return int(status.rsplit(" ", 1)[-1])


def to_proto(row: asyncpg.Record) -> activity_pb2.ActivityEntry:
    latency = Duration()
    latency.FromMicroseconds(row["latency_us"])
    return activity_pb2.ActivityEntry(
        id=row["activity_id"],
        organization_id=str(row["org_id"]),
        request_time=timestamp(row["request_time"]),
        request_id=row["request_id"],
        token_id=str(row["token_id"]),
        client=row["client"],
        user_agent=row["user_agent"],
        method=row["method"],
        route=row["route"],
        resource_id=row["resource_id"],
        filter=row["filter"],
        status=row["status"],
        scim_type=row["scim_type"],
        detail=row["detail"],
        latency=latency,
    )


@dataclass(frozen=True)
class Match:
    """Which of an organisation's entries a read wants, as MATCHES' $1..$8."""

    org_id: uuid.UUID
    since: datetime
    before: datetime
    errors_only: bool
    status: int
    user: str
    user_id: str
    client: str

    def args(self) -> tuple[object, ...]:
        return (
            self.org_id,
            self.since,
            self.before,
            self.errors_only,
            self.status,
            self.user,
            self.user_id,
            self.client,
        )


async def match(
    conn: Conn,
    org_id: uuid.UUID,
    wanted: admin_pb.ActivityFilter,
    since: datetime = NEVER,
    before: datetime = FOREVER,
) -> Match:
    if wanted.client and wanted.client not in CLIENTS:
        raise InvalidArgument(f"client must be one of {', '.join(CLIENTS)}", field="client")
    if not 0 <= wanted.status <= 999:
        raise InvalidArgument("status must be an HTTP status", field="status")
    user_id = ""
    if wanted.user:
        user_id = await conn.fetchval(SELECT_USER_ID, org_id, wanted.user) or ""
    return Match(
        org_id,
        since,
        before,
        wanted.errors_only,
        wanted.status,
        wanted.user,
        user_id,
        wanted.client,
    )


async def list_page(
    conn: Conn, where: Match, size: int, token: str
) -> tuple[list[asyncpg.Record], str]:
    """A page of entries, newest first, and the token of the next (older) page."""
    size = paging.page_size(size)
    position = paging.decode(token)
    at, last = None, None
    if position is not None:
        try:
            at, last = datetime.fromisoformat(position["t"]), int(position["a"])
        except (KeyError, TypeError, ValueError):
            raise InvalidArgument(
                "page_token is not one this server issued", field="page_token"
            ) from None
    rows = await conn.fetch(SELECT_PAGE, *where.args(), at, last, size + 1)
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        next_token = paging.encode(
            {"t": rows[-1]["request_time"].isoformat(), "a": rows[-1]["activity_id"]}
        )
    return rows, next_token


async def watch(
    pool: asyncpg.Pool, where: Match, start: datetime | None = None
) -> AsyncIterator[asyncpg.Record]:
    """Entries as they are recorded from now on (or from `start`, at most
    WATCH_WINDOW back), each once, in request order.

    Batches from several gateways commit out of request order, up to
    WATCH_LAG late: each look reads from WATCH_LAG before the newest entry sent
    and skips the ids already sent."""
    now = datetime.now(UTC)
    floor = now if start is None else max(start, now - WATCH_WINDOW)
    newest = floor
    sent: dict[int, datetime] = {}
    while True:
        low = max(floor, newest - WATCH_LAG)
        position: tuple[datetime, int] = (low, -1)
        while True:  # one look, a page at a time
            async with pool.acquire() as conn:
                rows = await conn.fetch(
                    SELECT_AFTER, *_from(where, low).args(), *position, WATCH_PAGE
                )
            for row in rows:
                if row["activity_id"] not in sent:
                    sent[row["activity_id"]] = row["request_time"]
                    newest = max(newest, row["request_time"])
                    yield row
            if len(rows) < WATCH_PAGE:
                break
            position = (rows[-1]["request_time"], rows[-1]["activity_id"])
        for key in [k for k, t in sent.items() if t < low]:
            del sent[key]
        await asyncio.sleep(WATCH_POLL_SECONDS)


def _from(where: Match, since: datetime) -> Match:
    return Match(**{**where.__dict__, "since": since})


async def prune(
    pool: asyncpg.Pool, retention: timedelta, max_per_org: int, batch: int = PRUNE_BATCH
) -> int:
    """Delete what retention and the cap leave out, `batch` rows a statement
    (short transactions, short locks); returns how many rows went."""
    deleted = 0
    async with pool.acquire() as conn:
        orgs = [r["org_id"] for r in await conn.fetch(SELECT_ORGS_WITH_ACTIVITY)]
    cutoff = datetime.now(UTC) - retention
    for org_id in orgs:
        async with pool.acquire() as conn:
            deleted += await _in_batches(conn, batch, DELETE_OLDER, org_id, cutoff)
            boundary = await conn.fetchrow(SELECT_CAP_BOUNDARY, org_id, max_per_org)
            if boundary is not None:
                deleted += await _in_batches(
                    conn, batch, DELETE_BEYOND_CAP, org_id, *boundary.values()
                )
    return deleted


async def _in_batches(conn: Conn, batch: int, statement: str, *args: object) -> int:
    """Run a DELETE whose last parameter is its batch size until it deletes less."""
    total = 0
    while True:
        status = await conn.execute(statement, *args, batch)
        count = int(status.rsplit(" ", 1)[-1])
        total += count
        if count < batch:
            return total
        await asyncio.sleep(0)  # let other work in between batches


class Pruner:
    """Prunes every PRUNE_EVERY_SECONDS in the background of a core process."""

    def __init__(self, pool: asyncpg.Pool, retention_days: int, max_per_org: int) -> None:
        self._task = asyncio.create_task(
            self._run(pool, timedelta(days=retention_days), max_per_org)
        )

    async def _run(self, pool: asyncpg.Pool, retention: timedelta, max_per_org: int) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY_SECONDS)
            try:
                deleted = await prune(pool, retention, max_per_org)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("activity pruning failed, retrying later: %s", exc)
                continue
            if deleted:
                log.info("pruned %s activity entries", deleted)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class ActivityService(activity_pb2_grpc.ActivityServiceServicer):
    def __init__(self, pool: asyncpg.Pool, guard: Guard) -> None:
        self._pool = pool
        self._guard = guard

    async def RecordActivity(
        self, request: activity_pb2.RecordActivityRequest, context: Ctx
    ) -> activity_pb2.RecordActivityResponse:
        self._guard.gateway(context)
        async with self._pool.acquire() as conn:
            recorded = await record(conn, request.requests)
        return activity_pb2.RecordActivityResponse(recorded=recorded)


async def resolve_match(
    conn: Conn, organization: str, wanted: admin_pb.ActivityFilter, **times: datetime
) -> Match:
    org = await organizations.resolve(conn, organization)
    return await match(conn, org["org_id"], wanted, **times)
