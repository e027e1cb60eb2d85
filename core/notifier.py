"""The process's one LISTEN connection for role changes (PostgreSQL
LISTEN/NOTIFY), kept alive, and who it wakes: WatchRoleChanges streams and
the role cache (core.role_cache).

A notification is only a doorbell: it names an organisation whose outbox
(role_changes) has new rows, and readers then read the outbox by sequence.
The notifier LISTENs first and only then tells its subscribers that it is
connected, so that they catch up from the outbox knowing that any later
commit will ring. A lost connection is noticed promptly, not after a TCP
timeout: asyncpg's termination listener, and a ping (SELECT 1 with a
deadline) every PING_SECONDS. While it is down, subscribers are told so
(the cache stops answering from memory), and it reconnects with a backoff.
Watchers also poll every POLL_SECONDS, so a lost notification delays them
but never loses a change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Protocol

import asyncpg

from core.roles import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
PING_SECONDS = 1.0
PING_TIMEOUT_SECONDS = 2.0
RECONNECT_SECONDS = (0.05, 2.0)  # first and longest wait before reconnecting


class Subscriber(Protocol):
    def notified(self, org_id: str) -> None: ...

    def connected(self) -> None: ...

    def lost(self) -> None: ...


class RoleNotifier:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        poll_seconds: float = POLL_SECONDS,
        ping_seconds: float = PING_SECONDS,
    ) -> None:
        self._pool = pool
        self.poll_seconds = poll_seconds
        self._ping_seconds = ping_seconds
        self._conn: Any = None
        self._events: dict[str, asyncio.Event] = {}
        self._subscribers: list[Subscriber] = []
        self._task: asyncio.Task[None] | None = None
        self._drop = asyncio.Event()
        self.live = False  # listening now
        self.deaf = False  # drop every notification (tests: notifications lost)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def start(self) -> None:
        if self._pool.get_max_size() < 2:  # the LISTEN connection would starve the calls
            log.warning(
                "a database pool of one connection: no LISTEN; watchers poll and the role"
                " cache stays off (raise WANDO_DB_POOL_MAX to 2 or more)"
            )
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="role-notifier")

    def drop_connection(self) -> None:
        """Close the LISTEN connection as if the network had (tests, drills);
        the notifier notices, tells its subscribers and reconnects."""
        conn = self._conn
        self.live = False
        for subscriber in self._subscribers:
            subscriber.lost()
        if conn is not None:
            conn.terminate()
        self._drop.set()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if self.deaf:
            return
        org = str(payload)
        event = self._events.pop(org, None)
        if event is not None:
            event.set()
        for subscriber in self._subscribers:
            subscriber.notified(org)

    def wake_all(self) -> None:
        """Wake every waiter now, as if each organisation had a change."""
        self._wake_all()

    def _wake_all(self) -> None:
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    async def _run(self) -> None:
        wait = RECONNECT_SECONDS[0]
        while True:
            try:
                await self._listen()
                wait = RECONNECT_SECONDS[0]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("role change notifications lost, reconnecting: %s", exc)
            await asyncio.sleep(wait)
            wait = min(wait * 2, RECONNECT_SECONDS[1])

    async def _listen(self) -> None:
        conn = await self._pool.acquire()
        terminated = asyncio.Event()
        self._drop.clear()
        try:
            conn.add_termination_listener(lambda _conn: terminated.set())
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            self._conn = conn
            self.live = True
            for subscriber in self._subscribers:
                subscriber.connected()  # LISTEN first, then catch up
            self._wake_all()
            while not terminated.is_set() and not self._drop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(terminated.wait(), timeout=self._ping_seconds)
                if terminated.is_set() or self._drop.is_set():
                    break
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=PING_TIMEOUT_SECONDS)
            log.warning("role change notifications: connection lost, reconnecting")
        finally:
            self.live = False
            self._conn = None
            for subscriber in self._subscribers:
                subscriber.lost()
            self._wake_all()
            await self._release(conn)

    async def _release(self, conn: Any) -> None:
        try:
            closed = conn.is_closed()
        except asyncpg.InterfaceError:  # the pool took a terminated connection back itself
            return
        if closed:
            with contextlib.suppress(Exception):
                await self._pool.release(conn)
            return
        try:
            await asyncio.wait_for(
                conn.remove_listener(NOTIFY_CHANNEL, self._on_notify),
                timeout=PING_TIMEOUT_SECONDS,
            )
            await self._pool.release(conn)
        except Exception:
            conn.terminate()
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    async def wait(self, event: asyncio.Event) -> bool:
        """Wait until `event` is set by a notification (True), or the poll
        interval passes (False)."""
        try:
            await asyncio.wait_for(event.wait(), timeout=self.poll_seconds)
        except TimeoutError:
            return False
        return True

    async def event(self, org_id: uuid.UUID) -> asyncio.Event:
        """The event set by the next notification for an organisation. Take it
        before reading the outbox, so that no commit slips between the two."""
        return self._events.setdefault(str(org_id), asyncio.Event())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
