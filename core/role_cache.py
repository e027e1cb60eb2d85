"""Each core replica's cache of RoleService answers, kept exact by the outbox.

Entries are GetEffectiveRole answers (EffectiveRole), keyed by organisation
and user id, with the lower-cased userName as a second key. They are filled
on demand from the database (core.roles.RESOLVE_SQL, which reads the rule's
one definition) and dropped by the outbox (role_changes), which has a row
for every change of an answer (core.roles.RoleTracker) or, with no user, for
changes that may touch any user of the organisation (a mapped group
renamed). No TTL: the outbox is the only way out, besides eviction.

Per organisation the cache keeps `applied`: every outbox row up to it has
been applied, in sequence order. An answer from the cache reflects at least
that sequence, and says so.

- Following the outbox: a notification (core.notifier) or the poll backstop
  (every poll_seconds: one query for the counters of every organisation
  held) starts a catch-up that reads the rows after `applied`, in order. A
  row missing at the start (the outbox pruned past it) drops the
  organisation's entries and its state. While an organisation's last
  catch-up failed, its answers come from the database, not from memory.
- The LISTEN connection lost: nothing is answered from memory until it is
  back and every organisation held has caught up from the outbox (a resync
  by sequence, not a flush). The default consistency's promise ("at most the
  stream's propagation delay old") rests on this.
- Fills: a fill records, before its database read, the cache's connection
  epoch and the organisation's epoch; its result is refused if either moved
  (the connection was lost, the organisation was dropped) or if its read
  reflects a sequence older than `applied` (an invalidation applied since
  may concern it). Concurrent misses for one key share one read.
- The first fill of an organisation sets its `applied` to the read's
  sequence and starts a catch-up at once, so a change that committed while
  the organisation was unknown (its notification ignored) is not missed.
- Bounded: at most max_entries answers and max_bytes (an estimate: the
  answer's encoded size plus ENTRY_OVERHEAD); least recently used first out.
  Answers are held encoded (held as messages they took three times the
  memory); GetEffectiveRole decodes a hit straight into its response
  (peek_encoded), about half a microsecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
from prometheus_client import Counter, Gauge

from core.metrics import batched_counter
from wando.provisioning.v1 import roles_pb2

if TYPE_CHECKING:
    from core.notifier import RoleNotifier

log = logging.getLogger(__name__)

# bytes per entry beyond the encoded answer (objects, keys, dicts): measured,
# 100,000 answers of one granting group each grow the process by ~70 MiB
ENTRY_OVERHEAD = 600
CATCH_UP_BATCH = 5000
FRESH_WAIT_SECONDS = 0.05  # at_least_as_fresh waits this long for the stream

# the rows after $2, in order, each with the counter (one row with seq NULL
# when there are none): in one snapshot, so that rows missing (pruned) show
SELECT_OUTBOX = """
SELECT c.last_seq, o.seq, o.user_id
FROM role_counters c
LEFT JOIN LATERAL (
    SELECT r.seq, r.user_id FROM role_changes r
    WHERE r.org_id = c.org_id AND r.seq > $2
    ORDER BY r.seq
    LIMIT $3
) AS o ON true
WHERE c.org_id = $1
"""

SELECT_COUNTERS = "SELECT org_id, last_seq FROM role_counters WHERE org_id = ANY($1::uuid[])"

Key = tuple[uuid.UUID, uuid.UUID]  # org, user
# a database read of one answer, and the sequence it reflects
Load = Callable[[], Awaitable[tuple[roles_pb2.EffectiveRole, int]]]

LOOKUPS = Counter(
    "wando_role_cache_lookups_total", "RoleService lookups asked of the role cache", ["result"]
)
# bound once, not per lookup; written in batches (core.metrics)
HIT, MISS = batched_counter(LOOKUPS.labels("hit")), batched_counter(LOOKUPS.labels("miss"))
DROPS = Counter(
    "wando_role_cache_organizations_dropped_total",
    "Organisations the role cache dropped: the outbox was pruned past it, or a resync failed",
)
ENTRIES = Gauge("wando_role_cache_entries", "Answers the role cache holds")
BYTES = Gauge("wando_role_cache_bytes", "Estimated memory of the answers the role cache holds")


@dataclass(slots=True)
class Entry:
    answer: bytes  # the EffectiveRole, encoded: a third of the memory of the message
    name_key: str
    size: int


@dataclass
class OrgState:
    applied: int
    epoch: int
    users: set[uuid.UUID] = field(default_factory=set)
    names: dict[str, uuid.UUID] = field(default_factory=dict)
    advanced: asyncio.Event = field(default_factory=asyncio.Event)
    dirty: bool = False
    catching_up: asyncio.Task[None] | None = None
    failed: bool = False  # the last catch-up failed: known to be behind, not served


@dataclass(frozen=True)
class Ticket:
    """What a fill saw before its database read."""

    connection: int
    org_epoch: int | None


class RoleCache:
    def __init__(
        self,
        pool: asyncpg.Pool,
        notifier: RoleNotifier,
        *,
        max_entries: int,
        max_bytes: int,
        poll_seconds: float,
    ) -> None:
        self._pool = pool
        self._notifier = notifier
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._poll_seconds = poll_seconds
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._orgs: dict[uuid.UUID, OrgState] = {}
        self._bytes = 0
        self._flights: dict[tuple[uuid.UUID, str, str], asyncio.Future[Any]] = {}
        self._connection = 0  # bumps on every loss and every (re)connection
        self._org_epochs = 0
        self._synced = False  # caught up since the last (re)connection
        self._resync: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        notifier.subscribe(self)
        ENTRIES.set_function(lambda: len(self._entries))
        BYTES.set_function(lambda: self._bytes)

    # -- state ---------------------------------------------------------------

    @property
    def serving(self) -> bool:
        """Whether answers may come from memory: listening, and caught up."""
        return self._notifier.live and self._synced

    @property
    def size(self) -> tuple[int, int]:
        """Entries and (estimated) bytes held."""
        return len(self._entries), self._bytes

    def applied(self, org_id: uuid.UUID) -> int | None:
        state = self._orgs.get(org_id)
        return None if state is None else state.applied

    def start(self) -> None:
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll(), name="role-cache-poll")

    async def close(self) -> None:
        tasks = [self._poller, self._resync] + [s.catching_up for s in self._orgs.values()]
        self._poller = self._resync = None
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -- reads ---------------------------------------------------------------

    def peek(
        self, org_id: uuid.UUID, kind: str, value: str
    ) -> tuple[roles_pb2.EffectiveRole, int] | None:
        """A held answer by user_id (a UUID's str) or user_name, with the
        sequence it reflects; None when it must be read."""
        hit = self.peek_encoded(org_id, self.user_id(org_id, kind, value))
        return None if hit is None else (roles_pb2.EffectiveRole.FromString(hit[0]), hit[1])

    def user_id(self, org_id: uuid.UUID, kind: str, value: str) -> uuid.UUID | None:
        """The id of the user a user_id (a UUID's str) or user_name names, as
        far as the cache knows (None: not known)."""
        if kind == "user_name":
            state = self._orgs.get(org_id)
            return None if state is None else state.names.get(value.lower())
        return _uuid(value)

    def peek_encoded(
        self, org_id: uuid.UUID, user_id: uuid.UUID | None
    ) -> tuple[bytes, int] | None:
        """peek() by a parsed user id (None: no such key), the answer as held
        (an encoded EffectiveRole): the caller decodes it where it goes."""
        state = self._orgs.get(org_id) if self.serving else None
        if state is None or state.failed or user_id is None:
            # unknown, or it knows it missed something: the database answers
            MISS.inc()
            return None
        key = (org_id, user_id)
        entry = self._entries.get(key)
        if entry is None:
            MISS.inc()
            return None
        HIT.inc()
        self._entries.move_to_end(key)
        return entry.answer, state.applied

    def ticket(self, org_id: uuid.UUID) -> Ticket | None:
        """Taken before a fill's database read; None: do not fill."""
        if not self.serving:
            return None
        state = self._orgs.get(org_id)
        return Ticket(self._connection, None if state is None else state.epoch)

    async def get(
        self,
        org_id: uuid.UUID,
        kind: str,
        value: str,
        load: Load,
        at_least: int = 0,
    ) -> tuple[roles_pb2.EffectiveRole, int]:
        """A held answer, or `load`'s (one read for concurrent misses of one
        key), which is then held unless a newer invalidation came first. A
        shared read older than `at_least`, or than what the cache had applied
        when the caller joined it, is not used: `load` runs again."""
        hit = self.peek(org_id, kind, value)
        if hit is not None:
            return hit
        return await self.fill(org_id, kind, value, load, at_least)

    async def fill(
        self,
        org_id: uuid.UUID,
        kind: str,
        value: str,
        load: Load,
        at_least: int = 0,
    ) -> tuple[roles_pb2.EffectiveRole, int]:
        """get() after a peek that missed."""
        flight_key = (org_id, kind, value.lower() if kind == "user_name" else value)
        flight = self._flights.get(flight_key)
        if flight is not None:
            # no older than what this cache has applied when joining: the
            # read may have started before an invalidation applied since
            at_least = max(at_least, self.applied(org_id) or 0)
            result: tuple[roles_pb2.EffectiveRole, int] = await asyncio.shield(flight)
            if result[1] >= at_least:
                return result
            return await load()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._flights[flight_key] = future
        try:
            ticket = self.ticket(org_id)
            answer, sequence = await load()
            self.put(org_id, ticket, [answer], sequence)
            future.set_result((answer, sequence))
            return answer, sequence
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self._flights[flight_key]

    async def fresh(self, org_id: uuid.UUID, sequence: int) -> bool:
        """Whether the organisation's answers in memory reflect `sequence`,
        waiting FRESH_WAIT_SECONDS for the stream to get there."""
        state = self._orgs.get(org_id)
        if state is None or not self.serving or state.failed:
            return False
        if state.applied >= sequence:
            return True
        self._catch_up(org_id)  # the caller knows of a change we may not have heard of
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FRESH_WAIT_SECONDS):
                while state.applied < sequence:
                    await state.advanced.wait()
                    if self._orgs.get(org_id) is not state or not self.serving:
                        return False
        return state.applied >= sequence and self.serving

    # -- fills ---------------------------------------------------------------

    def put(
        self,
        org_id: uuid.UUID,
        ticket: Ticket | None,
        answers: Iterable[roles_pb2.EffectiveRole],
        sequence: int,
    ) -> bool:
        """Hold answers read from the database at `sequence`, unless refused
        (see the module docstring). Returns whether they were held."""
        if ticket is None or ticket.connection != self._connection or not self.serving:
            return False
        if self.max_entries <= 0 or self.max_bytes <= 0:
            return False  # the cache is off
        state = self._orgs.get(org_id)
        if state is None:
            if ticket.org_epoch is not None:
                return False  # the organisation was dropped during the read
            self._org_epochs += 1
            state = self._orgs[org_id] = OrgState(applied=sequence, epoch=self._org_epochs)
            self._catch_up(org_id)
        elif ticket.org_epoch is not None and ticket.org_epoch != state.epoch:
            return False
        elif sequence < state.applied:
            return False  # read before an invalidation applied since
        for answer in answers:
            self._hold(org_id, state, answer)
        self._evict()
        return True

    def _hold(self, org_id: uuid.UUID, state: OrgState, answer: roles_pb2.EffectiveRole) -> None:
        user_id = uuid.UUID(answer.user_id)
        self._drop(org_id, user_id)
        encoded = answer.SerializeToString()
        entry = Entry(encoded, answer.user_name.lower(), len(encoded) + ENTRY_OVERHEAD)
        self._entries[(org_id, user_id)] = entry
        self._bytes += entry.size
        state.users.add(user_id)
        state.names[entry.name_key] = user_id

    def _drop(self, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
        entry = self._entries.pop((org_id, user_id), None)
        if entry is None:
            return
        self._bytes -= entry.size
        state = self._orgs.get(org_id)
        if state is not None:
            state.users.discard(user_id)
            if state.names.get(entry.name_key) == user_id:
                del state.names[entry.name_key]

    def _evict(self) -> None:
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            (org_id, user_id), _ = next(iter(self._entries.items()))
            self._drop(org_id, user_id)
            state = self._orgs.get(org_id)
            if state is not None and not state.users:  # nothing left to follow it for
                self.drop_organization(org_id)

    def drop_organization(self, org_id: uuid.UUID) -> None:
        """Forget an organisation (its entries and position) wholesale."""
        state = self._orgs.pop(org_id, None)
        if state is None:
            return
        for user_id in list(state.users):
            self._drop(org_id, user_id)
        if state.catching_up is not None and state.catching_up is not asyncio.current_task():
            state.catching_up.cancel()
        state.advanced.set()

    # -- following the outbox ------------------------------------------------

    def notified(self, org_id: str) -> None:
        parsed = _uuid(org_id)
        if parsed is not None and parsed in self._orgs:
            self._catch_up(parsed)

    def connected(self) -> None:
        self._connection += 1
        self._synced = False
        if self._resync is not None:
            self._resync.cancel()
        self._resync = asyncio.create_task(self._resync_all(self._connection))

    def lost(self) -> None:
        self._connection += 1
        self._synced = False

    async def _resync_all(self, connection: int) -> None:
        """After a (re)connection: catch every organisation up from the outbox."""
        try:
            await self._check_counters(wait=True)
        except Exception as exc:
            log.warning("role cache resync failed, dropping it: %s", exc)
            DROPS.inc(len(self._orgs))
            for org_id in list(self._orgs):
                self.drop_organization(org_id)
        if connection == self._connection:
            self._synced = True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                await self._check_counters(wait=False)
            except Exception as exc:
                log.warning("role cache poll failed: %s", exc)

    async def _check_counters(self, *, wait: bool) -> None:
        """The backstop: catch up every organisation whose counter is ahead."""
        if not self._orgs:
            return
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(SELECT_COUNTERS, list(self._orgs))
        behind = []
        for row in rows:
            state = self._orgs.get(row["org_id"])
            if state is not None and row["last_seq"] > state.applied:
                behind.append(row["org_id"])
                self._catch_up(row["org_id"])
        if wait:
            for org_id in behind:
                state = self._orgs.get(org_id)
                if state is not None and state.catching_up is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await asyncio.shield(state.catching_up)

    def _catch_up(self, org_id: uuid.UUID) -> None:
        state = self._orgs.get(org_id)
        if state is None:
            return
        state.dirty = True
        if state.catching_up is None or state.catching_up.done():
            state.catching_up = asyncio.create_task(self._follow(org_id, state))

    async def _follow(self, org_id: uuid.UUID, state: OrgState) -> None:
        try:
            while state.dirty and self._orgs.get(org_id) is state:
                state.dirty = False
                while True:
                    async with self._pool.acquire() as conn:
                        rows = await conn.fetch(
                            SELECT_OUTBOX, org_id, state.applied, CATCH_UP_BATCH
                        )
                    if self._orgs.get(org_id) is not state:
                        return
                    if not self._apply(org_id, state, rows):
                        return
                    if len(rows) < CATCH_UP_BATCH:
                        break
            state.failed = False
        except Exception as exc:
            log.warning("role cache catch-up failed: %s", exc)
            state.dirty = state.failed = True

    def _apply(self, org_id: uuid.UUID, state: OrgState, rows: list[asyncpg.Record]) -> bool:
        """Apply outbox rows in order; False if a sequence is missing (the
        outbox pruned past `applied`): the organisation is dropped."""
        for row in rows:
            if row["seq"] is None:  # no rows after `applied`
                if row["last_seq"] > state.applied:
                    log.warning("role cache: outbox pruned past %d; dropping", state.applied)
                    DROPS.inc()
                    self.drop_organization(org_id)
                    return False
                return True
            if row["seq"] <= state.applied:
                continue
            if row["seq"] != state.applied + 1:
                log.warning("role cache: outbox gap after %d; dropping organisation", state.applied)
                DROPS.inc()
                self.drop_organization(org_id)
                return False
            if row["user_id"] is None:
                for user_id in list(state.users):
                    self._drop(org_id, user_id)
            else:
                self._drop(org_id, row["user_id"])
            state.applied = row["seq"]
        if rows:  # wake those waiting for a sequence; later ones wait on a new event
            state.advanced.set()
            state.advanced = asyncio.Event()
        return True


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "never retrieved" warning
