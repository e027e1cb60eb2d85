"""Wakes role-change watchers when another transaction (on any replica) commits
changes: PostgreSQL LISTEN/NOTIFY on one connection per process. Watchers also
poll every few seconds, so a lost connection delays them but never loses a
change: the outbox table, not the notification, is the source of truth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import asyncpg

from core.roles import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


class RoleNotifier:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: Any = None
        self._events: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        event = self._events.pop(str(payload), None)
        if event is not None:
            event.set()

    async def _ensure_listening(self) -> None:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._pool.release(self._conn)
                self._conn = None
            try:
                conn = await self._pool.acquire()
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("role change notifications unavailable, polling: %s", exc)
                return
            self._conn = conn

    async def wait(self, event: asyncio.Event) -> None:
        """Wait until `event` is set by a notification, or the poll interval passes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=POLL_SECONDS)

    async def event(self, org_id: uuid.UUID) -> asyncio.Event:
        """The event set by the next notification for an organisation. Take it
        before reading the outbox, so that no commit slips between the two."""
        await self._ensure_listening()
        return self._events.setdefault(str(org_id), asyncio.Event())

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
                    await self._pool.release(self._conn)
                self._conn = None
