"""Activity: every SCIM request an organisation's token made (issue #18), for
Wando's support staff.

The gateway sends entries in batches (ActivityService.RecordActivity, gateway
credential). Each carries the SHA-256 of the bearer token presented, which is
what scim_tokens stores: record() looks up each token's organisation
(SELECT_TOKENS) — revoked and expired tokens included — and drops entries
whose hash matches no token (they are no organisation's activity). Each
organisation's entries of a batch, a minute at most, are stored as one row of
arrays (INSERT_CHUNK, migration 0011), read as one row per request through
the view `activity`. Staff read it with AdminService.ListActivity /
WatchActivity.

Pruning (Pruner, in each core process): chunks whose newest entry is older
than the retention, and each organisation's oldest chunks beyond its cap,
PRUNE_BATCH chunks a statement. How far beyond, activity_counts says (kept by
the same statements that insert and delete): pruning costs what it deletes,
not what is kept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from common.activity_columns import Columns
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

# a batch's columns: RecordActivity's, or a gateway's in this process (core.local)
ColumnsLike = Columns | activity_pb2.RecordedColumns

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

# the organisation and id of each token a batch names (revoked and expired
# ones too: their requests are still that organisation's activity)
SELECT_TOKENS = """
SELECT token_hash, org_id, token_id FROM scim_tokens WHERE token_hash = ANY($1::bytea[])
"""

# one organisation's requests of one CHUNK_SPAN from a batch, as one row
# (migration 0011), counted for the pruner's cap. Each array travels as one
# text: a text column's values each after a SEPARATOR (_joined), split here;
# numbers and ids as an array literal. asyncpg encodes a list element by
# element, with several isinstance checks against collections.abc for each:
# as lists, a batch's thirteen arrays cost the core 4 to 5 µs an entry in
# Python, twice what PostgreSQL then spent storing them.
#
# One statement, its own transaction (executemany: one for all the batch's
# chunks), one round trip. `batch` comes first, and each chunk's row (its
# chunk_id) is made from it:
# - the batch lock, held until the commit, so that chunk ids commit in order
#   and a watch that has seen chunk N has seen every one before it
#   (migrations 0009 and 0011 call it START_BATCH: it was a statement of
#   its own, in a transaction of three round trips more);
# - the commit does not wait for the WAL to reach disk (about a third of a
#   batch's cost in PostgreSQL): a PostgreSQL crash may lose the last
#   fraction of a second of activity, never half a batch and nothing else;
#   the gateway drops more whenever the core is away. set_config(…, true)
#   lasts until the commit (checked: the WAL is not yet flushed when the
#   statement returns, and the session's setting is unchanged).
INSERT_CHUNK = """
WITH batch AS MATERIALIZED (
    SELECT pg_advisory_xact_lock(7310575402957144899),
           set_config('synchronous_commit', 'off', true)
), added AS (
    INSERT INTO activity_chunks (org_id, first_time, last_time, entries, errors,
                                 request_time_us, token_id, request_id, client, user_agent,
                                 method, route, resource_id, filter, status, scim_type, detail,
                                 latency_us)
    SELECT $1, timestamptz 'epoch' + $2::bigint * interval '1 microsecond',
           timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4, $5,
           $6::text::bigint[],
           $7::text::uuid[],
           (string_to_array($8::text, E'\\x1f'))[2:],
           (string_to_array($9::text, E'\\x1f'))[2:],
           (string_to_array($10::text, E'\\x1f'))[2:],
           (string_to_array($11::text, E'\\x1f'))[2:],
           (string_to_array($12::text, E'\\x1f'))[2:],
           (string_to_array($13::text, E'\\x1f'))[2:],
           (string_to_array($14::text, E'\\x1f'))[2:],
           $15::text::smallint[],
           (string_to_array($16::text, E'\\x1f'))[2:],
           (string_to_array($17::text, E'\\x1f'))[2:],
           $18::text::integer[]
    FROM batch
    RETURNING org_id, entries
)
INSERT INTO activity_counts AS c (org_id, entries)
SELECT a.org_id, a.entries FROM added a
ON CONFLICT (org_id) DO UPDATE SET entries = c.entries + excluded.entries
"""
SEPARATOR = "\x1f"  # ASCII's unit separator; a value's own is replaced (_clip)

# how long the requests of one chunk may span: a chunk is pruned by age as a
# whole, so an entry may outlive the retention by this much
CHUNK_SPAN_US = 60_000_000

COLUMNS = """a.activity_id, a.org_id, a.request_time, a.token_id, a.request_id, a.client,
       a.user_agent, a.method, a.route, a.resource_id, a.filter, a.status, a.scim_type,
       a.detail, a.latency_us"""

# $1 org, $2 from, $3 before, $4 errors only, $5 status, $6 user (text),
# $7 user's id when $6 names a user, $8 client, then the page position. The
# conditions on a.chunk_* pick the chunks (their index) before they are
# unnested (migration 0011).
MATCHES = """
a.org_id = $1
  AND a.chunk_last_time >= $2 AND a.chunk_first_time < $3
  AND (NOT $4 AND $5 < 400 OR a.chunk_errors > 0)
  AND a.request_time >= $2 AND a.request_time < $3
  AND (NOT $4 OR a.status >= 400)
  AND ($5 = 0 OR a.status = $5)
  AND ($6 = '' OR a.resource_id = $6 OR (a.resource_id = $7 AND $7 <> '')
       OR strpos(lower(a.filter), lower($6)) > 0 OR strpos(lower(a.detail), lower($6)) > 0)
  AND ($8 = '' OR a.client = $8)
"""

# the chunks that may hold a page's entries (MATCHES' $1 to $5), newest first
# by their newest entry, after the chunk ($6, $7) in that order; $8 is the
# page position's time, $9 how many
SELECT_NEWEST_CHUNKS = """
SELECT chunk_id, last_time FROM activity_chunks
WHERE org_id = $1 AND last_time >= $2 AND first_time < $3
  AND (NOT $4 AND $5::smallint < 400 OR errors > 0)
  AND (last_time, chunk_id) < ($6, $7)
  AND ($8::timestamptz IS NULL OR first_time <= $8)
ORDER BY last_time DESC, chunk_id DESC
LIMIT $9
"""

# the entries of chunks $12 before the page position ($9, $10), newest first
SELECT_PAGE = f"""
SELECT {COLUMNS}
FROM activity a
WHERE {MATCHES}
  AND a.chunk_id = ANY($12::bigint[])
  AND ($9::timestamptz IS NULL OR (a.request_time, a.activity_id) < ($9, $10))
ORDER BY a.request_time DESC, a.activity_id DESC
LIMIT $11
"""

# a watch's start: the entries since its start (WATCH_WINDOW at most), oldest
# first
SELECT_AFTER = f"""
SELECT {COLUMNS}
FROM activity a
WHERE {MATCHES}
ORDER BY a.request_time, a.activity_id
"""

# the organisation's newest chunk (a watch follows the chunks after it)
SELECT_LAST_CHUNK = """
SELECT coalesce(max(chunk_id), 0) FROM activity_chunks WHERE org_id = $1
"""

SELECT_NEXT_CHUNKS = """
SELECT chunk_id FROM activity_chunks
WHERE org_id = $1 AND chunk_id > $2
ORDER BY chunk_id
LIMIT $3
"""

# the entries of the chunks after $9 up to $10, in the order they committed
SELECT_IN_CHUNKS = f"""
SELECT {COLUMNS}
FROM activity a
WHERE {MATCHES}
  AND a.chunk_id > $9 AND a.chunk_id <= $10
ORDER BY a.chunk_id, a.request_time, a.activity_id
"""

SELECT_USER_ID = """
SELECT user_id::text FROM users WHERE org_id = $1 AND lower(user_name) = lower($2)
"""

SELECT_ORGS_WITH_ACTIVITY = """
SELECT o.org_id FROM organizations o
WHERE EXISTS (SELECT 1 FROM activity_chunks c WHERE c.org_id = o.org_id)
"""

# each DELETE of an organisation's chunks returns how many chunks and entries
# went, and takes the entries off its count (activity_counts); a DELETE that
# found nothing, as most rounds' DELETE_OLDER does, writes no new version of
# the count
_DELETE_COUNTED = """
WITH {picked}, gone AS (
    DELETE FROM activity_chunks
    WHERE org_id = $1 AND chunk_id IN (SELECT chunk_id FROM picked)
    RETURNING entries
), counted AS (
    UPDATE activity_counts SET entries = entries - (SELECT sum(entries) FROM gone)
    WHERE org_id = $1 AND EXISTS (SELECT 1 FROM gone)
)
SELECT count(*) AS chunks, coalesce(sum(entries), 0) AS entries FROM gone
"""

# chunks whose newest entry is older than $2, at most $3
DELETE_OLDER = _DELETE_COUNTED.format(
    picked="""picked AS (
    SELECT chunk_id FROM activity_chunks
    WHERE org_id = $1 AND last_time < $2
    ORDER BY last_time, chunk_id
    LIMIT $3)"""
)

# how many entries the organisation has beyond the cap $2
SELECT_EXCESS = """
SELECT entries - $2 FROM activity_counts WHERE org_id = $1
"""

# the oldest chunks that hold the $2 oldest entries, at most $3 chunks
DELETE_OLDEST = _DELETE_COUNTED.format(
    picked="""oldest AS (
    SELECT chunk_id, sum(entries) OVER (ORDER BY last_time, chunk_id) - entries AS older
    FROM activity_chunks
    WHERE org_id = $1
    ORDER BY last_time, chunk_id
    LIMIT $3
), picked AS (
    SELECT chunk_id FROM oldest WHERE older < $2)"""
)

# chunks a statement deletes (each up to MAX_BATCH entries)
PRUNE_BATCH = 20
PRUNE_EVERY_SECONDS = 60.0
# how far back a watch's start may reach
WATCH_WINDOW = timedelta(seconds=30)
# chunks a watch reads at once (each up to MAX_BATCH entries), when it is behind
WATCH_CHUNKS = 50
WATCH_POLL_SECONDS = 1.0
# chunks a page's first read picks (then twice as many each time, up to the most)
PAGE_CHUNKS = 8
PAGE_CHUNKS_MOST = 256
NEVER = datetime(1, 1, 1, tzinfo=UTC)
FOREVER = datetime(9999, 1, 1, tzinfo=UTC)


# credential shapes a client might paste where it should not (a filter, a User-Agent)
_SECRET = re.compile(r"wando_(?:scim|admin|svc|gw)_[0-9A-Za-z_-]{8,}|(?i:bearer)\s+\S{8,}")
WITHHELD = "[withheld]"


def _clip(name: str, value: str) -> str:
    """A field as stored: no credential-shaped text, no NUL (PostgreSQL's text
    refuses it, and with it the whole batch), no SEPARATOR (INSERT_CHUNK splits
    on it), no lone surrogate (UTF-8 has none: a %-escaped byte that is not
    UTF-8, from a gateway in this process), at most LIMITS[name] long."""
    if not value:  # most entries have no filter, error or resource id
        return value
    value = _SECRET.sub(WITHHELD, value).replace("\x00", "\ufffd").replace(SEPARATOR, "\ufffd")
    value = value.encode("utf-8", "replace").decode("utf-8")
    if name == "filter" and "password" in value.lower():
        return WITHHELD  # a filter naming password may hold one
    limit = LIMITS[name]
    return value if len(value) <= limit else value[: limit - 1] + "…"


async def record(
    conn: Conn, batch: activity_pb2.RecordActivityRequest, known: Owners | None = None
) -> int:
    """Store a batch (its columns and its one-message-per-request part, which
    older gateways send); returns how many entries matched a token."""
    columns = batch.columns
    if batch.requests:
        columns = activity_pb2.RecordedColumns()
        columns.CopyFrom(batch.columns)
        _append(columns, batch.requests)
    return await store(conn, columns, known)


async def store(conn: Conn, columns: ColumnsLike, known: Owners | None = None) -> int:
    """Store a batch of columns: RecordActivity's message, or the same as
    plain lists from a gateway in this process (core.local); each checked as
    the other. Returns how many entries matched a token. `known`: the
    owners of tokens seen before (Owners)."""
    size = len(columns.request_time_us)
    if size > MAX_BATCH:
        raise InvalidArgument(f"at most {MAX_BATCH} requests a batch", field="requests")
    if not size:
        return 0
    for name in COLUMN_NAMES:
        if len(getattr(columns, name)) != size:
            raise InvalidArgument(f"{name} holds no value for each request", field="columns")
    if len(columns.clients) != len(columns.user_agents):
        raise InvalidArgument("clients holds no value for each User-Agent", field="columns")
    _check_index(columns.token, len(columns.token_sha256), "token")
    _check_index(columns.user_agent, len(columns.user_agents), "user_agent")
    owners = await (known or Owners()).of(conn, columns.token_sha256)
    owner = [owners[h] for h in columns.token_sha256]
    token_ids = [str(o[1]) if o else "" for o in owner]
    times = _times(list(columns.request_time_us))
    user_agents = _texts("user_agent", columns.user_agents)
    clients = [c if c in CLIENTS else "other" for c in columns.clients]
    fields: tuple[Sequence[Any], ...] = (
        times,
        [token_ids[t] for t in columns.token],
        _texts("request_id", columns.request_id),
        [clients[a] for a in columns.user_agent],
        [user_agents[a] for a in columns.user_agent],
        _texts("method", columns.method, repeated=True),
        _texts("route", columns.route, repeated=True),
        _texts("resource_id", columns.resource_id),
        _texts("filter", columns.filter),
        _bounded(columns.status, 0, 999),
        _texts("scim_type", columns.scim_type, repeated=True),
        _texts("detail", columns.detail, repeated=True),
        _bounded(columns.latency_us, 0, 2**31 - 1),
    )
    chunks = []
    for org_id, picked in _chunks(owner, columns.token, times):
        values = fields if picked is None else tuple([f[i] for i in picked] for f in fields)
        (times_us, token_of, *texts, status, scim_type, detail, latency) = values
        chunks.append(
            (
                org_id,
                min(times_us),
                max(times_us),
                len(times_us),
                sum(map((400).__le__, status)),
                _literal(times_us),
                _literal(token_of),
                *map(_joined, texts),
                _literal(status),
                _joined(scim_type),
                _joined(detail),
                _literal(latency),
            )
        )
    if not chunks:
        return 0
    await conn.executemany(INSERT_CHUNK, chunks)
    return sum(c[3] for c in chunks)


Owner = tuple[uuid.UUID, uuid.UUID]  # a token's organisation and id


class Owners:
    """Each token's organisation and id by its hash, as SELECT_TOKENS finds
    them, remembered by a process: a token never changes organisation and is
    never deleted (revoked and expired ones keep theirs), so a batch asks
    PostgreSQL only about tokens it has not seen (most batches: none). A
    hash that matches no token is asked about again after UNKNOWN_SECONDS
    (a client's wrong token is not worth a query a batch)."""

    MOST = 10_000  # tokens remembered; all forgotten past it
    UNKNOWN_SECONDS = 60.0

    def __init__(self) -> None:
        self._found: dict[bytes, Owner] = {}
        self._unknown: dict[bytes, float] = {}  # hash -> when to ask again

    async def of(self, conn: Conn, hashes: Sequence[bytes]) -> dict[bytes, Owner | None]:
        found, unknown = self._found, self._unknown
        now = time.monotonic()
        missing = [h for h in set(hashes) if h not in found and unknown.get(h, 0.0) <= now]
        if missing:
            if len(found) + len(missing) > self.MOST:
                found.clear()
            if len(unknown) > self.MOST:
                unknown.clear()
            for row in await conn.fetch(SELECT_TOKENS, missing):
                found[row["token_hash"]] = (row["org_id"], row["token_id"])
            for h in missing:
                if h not in found:
                    unknown[h] = now + self.UNKNOWN_SECONDS
        return {h: found.get(h) for h in hashes}


def _joined(values: Sequence[str]) -> str:
    """A text column as INSERT_CHUNK takes it: each value after a SEPARATOR
    (so that a lone empty value is one element, not none)."""
    return SEPARATOR + SEPARATOR.join(values)


def _literal(values: Sequence[object]) -> str:
    """Numbers or ids as an array literal."""
    return "{" + ",".join(map(str, values)) + "}"


def _chunks(
    owner: list[tuple[uuid.UUID, uuid.UUID] | None], token: Sequence[int], times: list[int]
) -> list[tuple[uuid.UUID, list[int] | None]]:
    """Which requests go in each chunk: each organisation's of each
    CHUNK_SPAN (None: all of them, as a batch of one organisation's last
    second usually is); requests whose token matches none are left out."""
    orgs = {o[0] for o in owner if o}
    first, last = min(times), max(times)
    if len(orgs) == 1 and all(owner) and first // CHUNK_SPAN_US == last // CHUNK_SPAN_US:
        return [(orgs.pop(), None)]
    picked: dict[tuple[uuid.UUID, int], list[int]] = {}
    for i, (t, us) in enumerate(zip(token, times, strict=True)):
        if (o := owner[t]) is not None:
            picked.setdefault((o[0], us // CHUNK_SPAN_US), []).append(i)
    return [(org_id, indexes) for (org_id, _), indexes in picked.items()]


# the columns with one value for each request
COLUMN_NAMES = (
    "token",
    "user_agent",
    "request_time_us",
    "latency_us",
    "request_id",
    "method",
    "route",
    "resource_id",
    "filter",
    "status",
    "scim_type",
    "detail",
)


def _append(
    columns: activity_pb2.RecordedColumns, requests: Sequence[activity_pb2.RecordedRequest]
) -> None:
    """Requests sent one message each, added to the columns."""
    tokens = {h: n for n, h in enumerate(columns.token_sha256)}
    agents = {a: n for n, a in enumerate(columns.user_agents)}
    for r in requests:
        e = r.entry
        if r.token_sha256 not in tokens:
            tokens[r.token_sha256] = len(tokens)
            columns.token_sha256.append(r.token_sha256)
        if e.user_agent not in agents:
            agents[e.user_agent] = len(agents)
            columns.user_agents.append(e.user_agent)
            columns.clients.append(e.client)
        columns.token.append(tokens[r.token_sha256])
        columns.user_agent.append(agents[e.user_agent])
        columns.request_time_us.append(_micros(e.request_time))
        columns.latency_us.append(e.latency.ToMicroseconds())
        columns.request_id.append(e.request_id)
        columns.method.append(e.method)
        columns.route.append(e.route)
        columns.resource_id.append(e.resource_id)
        columns.filter.append(e.filter)
        columns.status.append(e.status)
        columns.scim_type.append(e.scim_type)
        columns.detail.append(e.detail)


def _micros(stamp: Timestamp) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


def _check_index(indexes: Sequence[int], size: int, name: str) -> None:
    if indexes and (max(indexes) >= size or min(indexes) < 0):
        raise InvalidArgument(f"{name} names a value the batch does not hold", field="columns")


# a request's time as stored: in the years 1 to 9999 (what the readers can
# represent); no gateway sends another, which is taken as now rather than
# failing the batch
EARLIEST_US = _micros(Timestamp(seconds=-62135596800))
LATEST_US = _micros(Timestamp(seconds=253402300799))


def _times(values: list[int]) -> list[int]:
    if min(values) >= EARLIEST_US and max(values) <= LATEST_US:
        return values
    now = int(datetime.now(UTC).timestamp() * 1e6)
    return [v if EARLIEST_US <= v <= LATEST_US else now for v in values]


def _bounded(values: Sequence[int], low: int, high: int) -> Sequence[int]:
    if min(values) >= low and max(values) <= high:
        return values
    return [max(low, min(v, high)) for v in values]


def _texts(name: str, values: Sequence[str], repeated: bool = False) -> list[str]:
    """A column as stored (_clip), checked all at once: a batch's text
    rarely holds anything to withhold or cut, and one scan of it joined says
    so (substring searches first: _SECRET's scan costs ten times more). A
    `repeated` column (a method, a route: a handful of values in a batch) is
    checked a value once."""
    values = list(values)
    joined = "\n".join(set(values) if repeated else values)
    lowered = joined.lower()
    if (
        max(map(len, values), default=0) <= LIMITS[name]
        and "\x00" not in joined
        and SEPARATOR not in joined
        and (joined.isascii() or _utf8(joined))
        and not (("wando_" in joined or "bearer" in lowered) and _SECRET.search(joined))
        and not (name == "filter" and "password" in lowered)
    ):
        return values
    return [_clip(name, v) for v in values]


def _utf8(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    rows = await _newest(conn, where, at, last, size + 1)
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        next_token = paging.encode(
            {"t": rows[-1]["request_time"].isoformat(), "a": rows[-1]["activity_id"]}
        )
    return rows, next_token


async def _newest(
    conn: Conn, where: Match, at: datetime | None, last: int | None, size: int
) -> list[asyncpg.Record]:
    """The `size` newest entries before (at, last). Chunks overlap in time
    (several gateways; one that was cut off from the core sends late), so
    they are read newest first by their newest entry, a few more each time,
    until the next one's newest entry is older than the last entry kept."""
    found: list[asyncpg.Record] = []
    after: tuple[datetime, int] = (FOREVER, 2**63 - 1)
    wanted = PAGE_CHUNKS
    while True:
        chunks = await conn.fetch(SELECT_NEWEST_CHUNKS, *where.args()[:5], *after, at, wanted + 1)
        picked = chunks[:wanted]
        if picked:
            ids = [c["chunk_id"] for c in picked]
            rows = await conn.fetch(SELECT_PAGE, *where.args(), at, last, size, ids)
            found = sorted([*found, *rows], key=_position, reverse=True)[:size]
        if len(chunks) <= wanted:
            return found
        if len(found) == size and found[-1]["request_time"] > chunks[wanted]["last_time"]:
            return found
        after = (picked[-1]["last_time"], picked[-1]["chunk_id"])
        wanted = min(wanted * 2, PAGE_CHUNKS_MOST)


def _position(row: asyncpg.Record) -> tuple[datetime, int]:
    return (row["request_time"], row["activity_id"])


async def last_chunk(conn: Conn, org_id: uuid.UUID) -> int:
    """The position of the organisation's last chunk stored (watch's `after`)."""
    position: int = await conn.fetchval(SELECT_LAST_CHUNK, org_id)
    return position


async def watch(
    pool: asyncpg.Pool, where: Match, start: datetime | None = None, after: int = 0
) -> AsyncIterator[asyncpg.Record]:
    """Entries as they are stored from now on (also those already stored
    whose request is at or after `start`, at most WATCH_WINDOW back; or, with
    `after`, those stored after that position, from last_chunk()), each once,
    in the order their chunks committed.

    Entries carry their request's time and arrive in batches up to a flush
    interval later (much later from a gateway that was cut off from the core),
    from several gateways in any order; following the request time would miss
    a late batch. So a watch reads the number of the last chunk stored (and
    what `start` asks for, in the same snapshot), then follows the chunks
    after it (numbered in commit order)."""
    last = after
    if not after:
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            last = await last_chunk(conn, where.org_id)
            stored = []
            if start is not None:
                since = max(start, datetime.now(UTC) - WATCH_WINDOW)
                since = max(since, where.since)
                stored = await conn.fetch(SELECT_AFTER, *_from(where, since).args())
        for row in stored:
            yield row
    while True:
        async with pool.acquire() as conn:
            chunks = await conn.fetch(SELECT_NEXT_CHUNKS, where.org_id, last, WATCH_CHUNKS)
            if chunks:
                upto = chunks[-1]["chunk_id"]
                rows = await conn.fetch(SELECT_IN_CHUNKS, *where.args(), last, upto)
                last = upto
        if chunks:
            for row in rows:
                yield row
        if len(chunks) < WATCH_CHUNKS:
            await asyncio.sleep(WATCH_POLL_SECONDS)


def _from(where: Match, since: datetime) -> Match:
    return Match(**{**where.__dict__, "since": since})


# one pruner at a time across every core replica: each would walk the same
# organisations and only one deletes anything; the others skip their round. A session lock
# on the one connection the prune uses (its deletes are short transactions of
# their own): released at the end, or the connection is closed with it.
TRY_PRUNE_LOCK = "SELECT pg_try_advisory_lock(7310575402957144900)"
PRUNE_UNLOCK = "SELECT pg_advisory_unlock(7310575402957144900)"


async def prune(
    pool: asyncpg.Pool, retention: timedelta, max_per_org: int, batch: int = PRUNE_BATCH
) -> int:
    """Delete what retention and the cap leave out, `batch` rows a statement
    (short transactions, short locks); returns how many rows went (0 when
    another replica is pruning)."""
    async with pool.acquire() as conn:
        if not await conn.fetchval(TRY_PRUNE_LOCK):
            return 0
        released = False
        try:
            deleted = await _prune(conn, retention, max_per_org, batch)
            released = await conn.fetchval(PRUNE_UNLOCK)
            return deleted
        finally:
            if not released:  # failed or cancelled midway: the lock goes with the session
                conn.terminate()


async def _prune(conn: Conn, retention: timedelta, max_per_org: int, batch: int) -> int:
    deleted = 0
    orgs = [r["org_id"] for r in await conn.fetch(SELECT_ORGS_WITH_ACTIVITY)]
    cutoff = datetime.now(UTC) - retention
    for org_id in orgs:
        while True:  # its chunks past the retention, a batch at a time
            chunks, entries = await _delete(conn, DELETE_OLDER, org_id, cutoff, batch)
            deleted += entries
            if chunks < batch:
                break
        excess = await conn.fetchval(SELECT_EXCESS, org_id, max_per_org) or 0
        while excess > 0:  # its oldest chunks, until it is within its cap
            chunks, entries = await _delete(conn, DELETE_OLDEST, org_id, excess, batch)
            deleted += entries
            excess = excess - entries if chunks else 0
    return deleted


async def _delete(conn: Conn, statement: str, *args: object) -> tuple[int, int]:
    """One of the pruner's DELETEs: how many chunks and entries went."""
    gone = await conn.fetchrow(statement, *args)
    await asyncio.sleep(0)  # let other work in between batches
    return (gone["chunks"], gone["entries"]) if gone else (0, 0)


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
    def __init__(self, recorder: Recorder, guard: Guard) -> None:
        self._recorder = recorder
        self._guard = guard

    async def RecordActivity(
        self, request: activity_pb2.RecordActivityRequest, context: Ctx
    ) -> activity_pb2.RecordActivityResponse:
        self._guard.gateway(context)
        recorded = await self._recorder.record(request)
        return activity_pb2.RecordActivityResponse(
            recorded=recorded, columns_read=request.HasField("columns")
        )


class Recorder:
    """Stores activity batches on a pool: RecordActivity's, and a gateway's
    in this process (core.local: plain columns, no credential to check, the
    caller is this process). One per process, for the tokens it knows."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._known = Owners()

    async def record(self, batch: activity_pb2.RecordActivityRequest) -> int:
        async with self._pool.acquire() as conn:
            return await record(conn, batch, self._known)

    async def store(self, columns: Columns) -> int:
        async with self._pool.acquire() as conn:
            return await store(conn, columns, self._known)


async def resolve_match(
    conn: Conn, organization: str, wanted: admin_pb.ActivityFilter, **times: datetime
) -> Match:
    org = await organizations.resolve(conn, organization)
    return await match(conn, org["org_id"], wanted, **times)
