"""User creations, gathered per organisation: while one organisation's
creation statement is in PostgreSQL, this process's next creations for that
organisation wait here, and go together as the next statement
(users.INSERT_USERS), one transaction, one commit.

Why: a creation takes the organisation's role counter (core.roles) and holds
it until it commits, so an organisation's creations commit one after another
whatever their number in flight. Left to queue in PostgreSQL, each waiter
sleeps and wakes on the row lock and re-reads the updated counter: measured
with 16 creations in flight on one organisation, PostgreSQL spent 0.74-0.79 ms
of CPU per creation against 0.44-0.47 ms with one or two in flight
(bench/RESULTS.md, session 6). Gathered, a burst of n creations costs one
statement, one counter update and one commit (WAL flush). A lone creation
goes at once, as before: nothing waits for a batch to fill.

Each creation is still all or nothing, and is answered only after its commit.
A batch is one transaction, so a failure of the whole statement would fail
every creation in it; such a batch is then run again one creation at a time,
so that a creation fails only for its own reasons. A taken userName skips
that user alone (users.INSERT_USERS). The order of the organisation's
commits, and so of the change stream, is still the counter's.

Whose statement is it: a creation that goes alone runs its statement in its
caller's context (its request id in the logs, its trace); a batch of several
runs in a context of none of them, its statements in a span of their own
linked to each caller's (common.tracing.linked_span). The loop that drains an
organisation's queue runs in an empty context: it was started by whichever
caller came first, but it works for all."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from opentelemetry import trace

from common import tracing, wirejson
from core import counts
from core.errors import Unavailable
from core.instrumentation import DB_UNAVAILABLE

# at most this many creations in one statement
MAX_BATCH = 100


@dataclass
class Creation:
    """One user to create: the columns users.INSERT_USERS takes for it."""

    user_id: uuid.UUID
    user_name: str
    external_id: str | None
    display_name: str | None
    active: bool
    document: dict[str, Any]
    emails: list[str]
    role_values: list[str]
    token_id: uuid.UUID | None
    changed: list[str]
    done: asyncio.Future[asyncpg.Record | None] = field(init=False)
    # the caller's context, and its span's for a batch's links
    context: contextvars.Context = field(init=False)
    span: trace.SpanContext = field(init=False)

    def __post_init__(self) -> None:
        self.context = contextvars.copy_context()
        self.span = trace.get_current_span().get_span_context()
        self.done = asyncio.get_running_loop().create_future()
        # read, so that a failure whose caller went away is not logged as unread
        self.done.add_done_callback(lambda f: f.cancelled() or f.exception())


class RolesChanging(Exception):
    """The organisation's role configuration changed under every try."""


class Creations:
    def __init__(self, pool: asyncpg.Pool, statement: str, attempts: int) -> None:
        self._pool = pool
        self._statement = statement
        self._attempts = attempts
        self._waiting: dict[uuid.UUID, list[Creation]] = {}
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.batches = 0  # statements sent, for tests

    async def create(self, org_id: uuid.UUID, creation: Creation) -> asyncpg.Record | None:
        """The new user's row (with role_sequence), or None if its userName is
        taken. Raises RolesChanging, or the database's error."""
        self._waiting.setdefault(org_id, []).append(creation)
        if org_id not in self._running:
            self._running[org_id] = asyncio.get_running_loop().create_task(
                self._run(org_id), context=contextvars.Context()
            )
        # shielded: a caller that goes away leaves the others' batch alone
        return await asyncio.shield(creation.done)

    async def _run(self, org_id: uuid.UUID) -> None:
        try:
            while waiting := self._waiting.pop(org_id, []):
                self._waiting[org_id] = waiting[MAX_BATCH:]  # a burst beyond a batch waits
                await self._write(org_id, waiting[:MAX_BATCH])
        finally:
            del self._running[org_id]
            for creation in self._waiting.pop(org_id, []):  # only if cancelled (shutdown)
                _fail(creation, Unavailable("the core is stopping; retry"))

    async def _write(self, org_id: uuid.UUID, batch: list[Creation]) -> None:
        try:
            rows = await self._in_context(org_id, batch)
        except Exception as exc:
            if (
                len(batch) > 1
                and isinstance(exc, asyncpg.PostgresError)
                and not isinstance(exc, DB_UNAVAILABLE)
            ):
                for creation in batch:  # one at a time: each fails for itself alone
                    await self._write(org_id, [creation])
                return
            for creation in batch:
                _fail(creation, exc)
            return
        except BaseException:
            for creation in batch:
                _fail(creation, Unavailable("the core is stopping; retry"))
            raise
        by_id = {row["user_id"]: row for row in rows}
        for creation in batch:
            if not creation.done.done():
                creation.done.set_result(by_id.get(creation.user_id))

    def _in_context(
        self, org_id: uuid.UUID, batch: list[Creation]
    ) -> asyncio.Task[list[asyncpg.Record]]:
        """_insert in the lone creation's context, or a batch's in a span linked
        to each of its callers' (a task: a coroutine cannot change context)."""
        loop = asyncio.get_running_loop()
        if len(batch) == 1:
            return loop.create_task(self._insert(org_id, batch), context=batch[0].context.copy())
        return loop.create_task(self._linked(org_id, batch), context=contextvars.Context())

    async def _linked(self, org_id: uuid.UUID, batch: list[Creation]) -> list[asyncpg.Record]:
        attributes = {"wando.batch_size": len(batch)}
        with tracing.linked_span("user creations", [c.span for c in batch], attributes):
            return await self._insert(org_id, batch)

    async def _insert(self, org_id: uuid.UUID, batch: list[Creation]) -> list[asyncpg.Record]:
        emails = [(n, v) for n, c in enumerate(batch, 1) for v in c.emails]
        values = [(n, v) for n, c in enumerate(batch, 1) for v in c.role_values]
        arguments = (
            org_id,
            [c.user_id for c in batch],
            [c.user_name for c in batch],
            [c.external_id for c in batch],
            [c.display_name for c in batch],
            [c.active for c in batch],
            [c.document for c in batch],
            counts.slot(),
            [n for n, _ in emails],
            [v for _, v in emails],
            [n for n, _ in values],
            [v for _, v in values],
            [c.token_id for c in batch],
            [wirejson.dumps(c.changed) for c in batch],
        )
        self.batches += 1
        async with self._pool.acquire() as conn:
            for _ in range(self._attempts):
                rows = await conn.fetch(self._statement, *arguments)
                if rows[0]["in_force"]:
                    return [r for r in rows if r["user_id"] is not None]
        raise RolesChanging()


def _fail(creation: Creation, exc: BaseException) -> None:
    if not creation.done.done():
        creation.done.set_exception(exc)
