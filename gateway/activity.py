"""Activity: the gateway's record of every SCIM request that presented a bearer
token, sent to the core in batches off the request path (issue #18).

A request only appends its entry's fields to one bounded flat list
(`ActivityWriter.record`, `Kept`); a background task turns it into
RecordActivity calls every BATCH_SECONDS, or sooner once BATCH_SIZE entries
wait (to a local core, WANDO_CORE=local, the same columns as plain lists,
with no message: LocalCore.record_activity). When the list is full
(the core is slow or away), new entries are dropped and counted in
wando_activity_dropped_total; a failed batch is dropped and counted too. A SCIM
request never waits for, or fails because of, its activity entry.

Each entry carries the SHA-256 of the bearer token, not the token: the core
looks the token up by that hash and attributes the entry to its organisation,
revoked and expired tokens too. The batches go with the *gateway credential*
(WANDO_GATEWAY_TOKEN, or <data dir>/gateway-token that the core generates),
which ActivityService alone accepts: a gateway that can record activity can
read nothing and change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NamedTuple

import grpc
from aiohttp import web
from prometheus_client import Counter

from common import credentials
from common.activity_columns import Columns
from common.config import Settings
from gateway.keys import ACTIVITY, CORE, FAILURE, RESOURCE_ID, SEARCH_FILTER, SETTINGS
from gateway.metrics import UNMATCHED
from wando.provisioning.v1 import activity_pb2, activity_pb2_grpc

log = logging.getLogger("gateway.activity")

# a batch costs ~1 ms of CPU in the core and PostgreSQL and ~0.4 ms here
# whatever its size (a gRPC call, a transaction), against ~7 us an entry: under
# load, a batch a second keeps that to ~1.5 us an entry (the core takes at most
# 1000 a batch)
BATCH_SIZE = 1000
BATCH_SECONDS = 1.0
MAX_PENDING = 20_000
SEND_TIMEOUT_SECONDS = 5.0
USER_AGENT_LENGTH = 200
FILTER_LENGTH = 1000

DROPPED = Counter(
    "wando_activity_dropped_total",
    "Activity entries the gateway dropped instead of sending to the core",
    ["reason"],  # queue_full, send_failed, no_credential
)
_QUEUE_FULL = DROPPED.labels("queue_full")
SENT = Counter("wando_activity_sent_total", "Activity entries the gateway sent to the core")


_CLIENTS = (
    ("okta", re.compile(r"\bokta\b", re.IGNORECASE)),
    ("entra", re.compile(r"\b(?:microsoft|azure|entra|aad)\b", re.IGNORECASE)),
    ("auth0", re.compile(r"\bauth0\b", re.IGNORECASE)),
)


@functools.lru_cache(maxsize=256)  # a client sends the same User-Agent every time
def client_from_user_agent(user_agent: str) -> str:
    """okta, entra, auth0 or other. Okta sends "Okta SCIM Client 1.0.0" or
    "OKTA SCIM Integration" (shared/reference/idp-scim-traffic.md §1); Entra's
    and Auth0's are unpublished, so any mention of their names counts."""
    for client, names in _CLIENTS:
        if names.search(user_agent):
            return client
    return "other"


class Pending(NamedTuple):
    """One request's entry as the hot path leaves it: no protobuf, no hashing, no
    formatting (a tuple: the cheapest thing to build; `Kept` keeps its fields)."""

    token: str
    wall_time: float
    request_id: str
    user_agent: str
    method: str
    route: str
    resource_id: str
    filter: str
    status: int
    scim_type: str
    detail: str
    latency_seconds: float


# one entry, as the request path leaves it: Pending's fields in order, in a plain
# tuple (a NamedTuple costs more to build than the whole append)
Entry = tuple[str, float, str, str, str, str, str, str, int, str, str, float]
FIELDS = len(Pending._fields)


class Kept:
    """The entries waiting for a batch, one after another in one flat list
    (FIELDS values an entry): a request's whole cost here is one `extend`.

    Not a list of entries: a tuple subclass such as Pending stays tracked by
    the garbage collector (CPython untracks only exact tuples), so a second's
    worth of kept entries survived each young collection into the oldest
    generation, and the gateway, which otherwise leaves next to nothing
    behind a request, ran a full collection of its whole heap (~150 ms under
    the bench's load) every few tens of thousands of requests: most of what
    activity cost a GET (issue #18). Strings and numbers in a list leave the
    collector nothing to count."""

    def __init__(self, values: list[Any] | None = None) -> None:
        self.values: list[Any] = [] if values is None else values

    def append(self, entry: Entry) -> None:
        self.values.extend(entry)

    def __len__(self) -> int:
        return len(self.values) // FIELDS

    def cut(self, start: int, stop: int) -> Kept:
        return Kept(self.values[start * FIELDS : stop * FIELDS])

    def put_back(self, kept: Kept) -> None:
        """`kept` ahead of what is here (a send that did not happen)."""
        self.values[:0] = kept.values

    @property
    def fields(self) -> tuple[list[Any], ...]:
        """One list a field, in Pending's order."""
        return tuple(self.values[n::FIELDS] for n in range(FIELDS))

    def entries(self) -> list[Pending]:
        v = self.values
        return [Pending._make(v[n : n + FIELDS]) for n in range(0, len(v), FIELDS)]


def columns(batch: list[Pending], sha256: Callable[[str], bytes]) -> activity_pb2.RecordedColumns:
    """A batch as RecordActivity's columns: each column in one call, each
    distinct token and User-Agent once (a gateway sees a handful of each)."""
    kept = Kept()
    for entry in batch:
        kept.append(entry)
    return kept_columns(kept, sha256)


def kept_columns(kept: Kept, sha256: Callable[[str], bytes]) -> activity_pb2.RecordedColumns:
    """`columns` of entries as `Kept` holds them."""
    sent = activity_pb2.RecordedColumns()
    for name, values in plain_columns(kept, sha256)._asdict().items():
        _extend(getattr(sent, name), values)  # the message's fields, by the same names
    return sent


def plain_columns(kept: Kept, sha256: Callable[[str], bytes]) -> Columns:
    """The same columns as plain lists, as a local core takes them
    (LocalCore.record_activity): each column in one call, each distinct
    token and User-Agent once (a gateway sees a handful of each)."""
    (
        tokens,
        wall_times,
        request_ids,
        user_agents,
        methods,
        routes,
        resource_ids,
        filters,
        statuses,
        scim_types,
        details,
        latencies,
    ) = kept.fields
    token_index: dict[str, int] = {}
    token = [token_index.setdefault(t, len(token_index)) for t in tokens]
    agent_index: dict[str, int] = {}
    user_agent = [agent_index.setdefault(a, len(agent_index)) for a in user_agents]
    return Columns(
        token_sha256=[sha256(t) for t in token_index],
        token=token,
        user_agents=[a[:USER_AGENT_LENGTH] for a in agent_index],
        clients=[client_from_user_agent(a) for a in agent_index],
        user_agent=user_agent,
        request_time_us=[int(t * 1e6) for t in wall_times],
        latency_us=[int(t * 1e6) for t in latencies],
        request_id=request_ids,
        method=methods,
        route=routes,
        resource_id=resource_ids,
        filter=[f[:FILTER_LENGTH] if f else f for f in filters],
        status=statuses,
        scim_type=scim_types,
        detail=details,
    )


def one_by_one(
    batch: list[Pending], sha256: Callable[[str], bytes]
) -> list[activity_pb2.RecordedRequest]:
    """A batch as one RecordedRequest each: the form a core older than
    `columns` reads (RecordActivityResponse.columns_read)."""
    sent = []
    for p in batch:
        request = activity_pb2.RecordedRequest(token_sha256=sha256(p.token))
        entry = request.entry
        entry.request_time.FromMicroseconds(int(p.wall_time * 1e6))  # as `columns`
        entry.latency.FromMicroseconds(int(p.latency_seconds * 1e6))
        entry.client = client_from_user_agent(p.user_agent)
        entry.status = p.status
        for field, value in (
            ("request_id", p.request_id),
            ("user_agent", p.user_agent[:USER_AGENT_LENGTH]),
            ("method", p.method),
            ("route", p.route),
            ("resource_id", p.resource_id),
            ("filter", p.filter[:FILTER_LENGTH]),
            ("scim_type", p.scim_type),
            ("detail", p.detail),
        ):
            try:
                setattr(entry, field, value)
            except (ValueError, UnicodeError):  # a lone surrogate, from a %-escape
                setattr(entry, field, _utf8(value))
        sent.append(request)
    return sent


def _extend(column: Any, values: Sequence[Any]) -> None:
    try:
        column.extend(values)
    except UnicodeError:  # a lone surrogate, from a %-escape (nothing was added)
        column.extend([_utf8(v) for v in values])


def _utf8(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


class ActivityWriter:
    def __init__(self, channel: Callable[[], grpc.aio.Channel], settings: Settings) -> None:
        self._current = channel  # the core channel now (gateway.corechannel renews it)
        self._channel: grpc.aio.Channel | None = None
        self._stub_now: activity_pb2_grpc.ActivityServiceAsyncStub | None = None
        self._settings = settings
        self._pending = Kept()
        self._full = asyncio.Event()
        self._sending = asyncio.Lock()
        self._metadata: tuple[tuple[str, str], ...] | None = None
        self._warned = False
        self._hashes: dict[str, bytes] = {}
        self._task = asyncio.create_task(self._run())

    def record(self, entry: Entry) -> None:
        """Keep an entry for the next batch (never blocks, never raises)."""
        values = self._pending.values
        if len(values) >= MAX_PENDING * FIELDS:
            _QUEUE_FULL.inc()
            return
        values.extend(entry)
        if len(values) >= BATCH_SIZE * FIELDS:
            self._full.set()

    async def flush(self) -> None:
        """Send everything kept so far, and what arrives meanwhile (shutdown; tests)."""
        while len(self._pending):
            await self._send_kept()

    async def _send_kept(self) -> None:
        """Send the entries kept when called; those that arrive meanwhile wait for
        the next tick, so that batches stay large under load (sending again at
        once would send a round trip's worth each time)."""
        async with self._sending:
            kept, self._pending = self._pending, Kept()
            start = 0
            try:
                for start in range(0, len(kept), BATCH_SIZE):
                    await self._send(kept.cut(start, start + BATCH_SIZE))
            except asyncio.CancelledError:
                self._pending.put_back(kept.cut(start, len(kept)))  # close() sends them
                raise

    async def close(self) -> None:
        """Stop ticking, then send what is kept, for at most SEND_TIMEOUT_SECONDS
        (a shutdown does not wait on a core that does not answer)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        try:
            await asyncio.wait_for(self.flush(), SEND_TIMEOUT_SECONDS)
        except TimeoutError:
            DROPPED.labels("send_failed").inc(len(self._pending))
            self._pending = Kept()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), BATCH_SECONDS)
            self._full.clear()
            await self._send_kept()

    def _sha256(self, token: str) -> bytes:
        """A token's SHA-256, computed once per token while it is in use."""
        digest = self._hashes.get(token)
        if digest is None:
            if len(self._hashes) >= 10_000:
                self._hashes.clear()
            digest = self._hashes[token] = hashlib.sha256(token.encode()).digest()
        return digest

    def _credential(self) -> tuple[tuple[str, str], ...] | None:
        if self._metadata is None:
            secret = credentials.read_credential(
                self._settings.gateway_token,
                self._settings.data_dir,
                credentials.GATEWAY_TOKEN_FILE,
            )
            if secret:
                self._metadata = (("authorization", f"Bearer {secret}"),)
        return self._metadata

    async def _send(self, batch: Kept) -> None:
        local = getattr(self._current(), "record_activity", None)  # core.local's
        try:
            if local is not None:
                await asyncio.wait_for(
                    local(plain_columns(batch, self._sha256)), SEND_TIMEOUT_SECONDS
                )
            elif not await self._send_message(batch):
                return
        except grpc.aio.AioRpcError as exc:
            DROPPED.labels("send_failed").inc(len(batch))
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                self._metadata = None  # read it again next time
            self._warn_once(f"the core did not take a batch: {exc.code().name}")
            return
        except Exception as exc:
            DROPPED.labels("send_failed").inc(len(batch))
            if local is None:
                log.exception("activity batch not sent")
            else:  # the type alone: a database error may quote what it refused
                self._warn_once(f"the local core did not take a batch: {type(exc).__name__}")
            return
        SENT.inc(len(batch))
        self._warned = False

    async def _send_message(self, batch: Kept) -> bool:
        """RecordActivity over the core channel; False: dropped, no credential."""
        metadata = self._credential()
        if metadata is None:
            DROPPED.labels("no_credential").inc(len(batch))
            self._warn_once("no gateway credential: set WANDO_GATEWAY_TOKEN")
            return False
        request = activity_pb2.RecordActivityRequest(columns=kept_columns(batch, self._sha256))
        answer = await self._stub.RecordActivity(
            request, metadata=metadata, timeout=SEND_TIMEOUT_SECONDS
        )
        if not answer.columns_read:
            # a core from before `columns` (a rolling upgrade that reached
            # the gateways first) stored none of it: the form it reads
            request = activity_pb2.RecordActivityRequest(
                requests=one_by_one(batch.entries(), self._sha256)
            )
            await self._stub.RecordActivity(
                request, metadata=metadata, timeout=SEND_TIMEOUT_SECONDS
            )
        return True

    @property
    def _stub(self) -> activity_pb2_grpc.ActivityServiceAsyncStub:
        """The stub on the core channel's current channel (a new one after a
        TLS rotation: gateway.corechannel)."""
        channel = self._current()
        if self._stub_now is None or self._channel is not channel:
            self._channel = channel
            self._stub_now = activity_pb2_grpc.ActivityServiceStub(self._channel)
        return self._stub_now

    def _warn_once(self, why: str) -> None:
        if not self._warned:
            log.warning("activity entries dropped (%s); SCIM requests are unaffected", why)
            self._warned = True


async def activity_writer(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the writer on the core channel; on the way out it sends
    what it still holds (before the channel closes)."""
    settings = app[SETTINGS]
    if not settings.activity:
        yield
        return
    core = app[CORE]
    writer = ActivityWriter(lambda: core.channel, settings)
    app[ACTIVITY] = writer
    try:
        yield
    finally:
        await writer.close()


def entry(
    request: web.Request,
    token: str,
    request_id: str,
    route: str,
    status: int,
    elapsed: float,
    prefix: str,
) -> Entry:
    """What the request context keeps of a finished request (`route`: its
    metrics route). It asks the request only for what can be there: looking up
    a key a request lacks costs an exception (aiohttp's Request.get is
    Mapping.get), and three of them cost as much as the rest (a POST /Users
    asked for a search filter: 0.4 of its 1.1 µs)."""
    method = request.method
    resource_id = request.match_info.get("id", "")
    if status == 201:  # the id the POST created
        resource_id = request.get(RESOURCE_ID) or resource_id
    search = ""
    if route.endswith("/.search"):  # its body's, once its handler has read it
        search = request.get(SEARCH_FILTER, "")
    if not search and request.query_string:  # the query parsed only if there is one
        search = request.query.get("filter", "")
    scim_type = detail = ""
    if status >= 400:
        failure = request.get(FAILURE)
        if failure is not None:
            scim_type, detail = failure.scim_type or "", failure.detail or ""
    return (
        token,
        time.time() - elapsed,
        request_id,
        request.headers.get("User-Agent", ""),
        method,
        route.removeprefix(prefix) if route != UNMATCHED else "",
        resource_id,
        search,
        status,
        scim_type,
        detail,
        elapsed,
    )
