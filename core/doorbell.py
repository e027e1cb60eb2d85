"""The doorbell that tells other replicas an organisation's role outbox has
new rows: a NOTIFY on roles.NOTIFY_CHANNEL, sent by this process after the
write's commit, one per organisation per short window.

Why not NOTIFY inside the write's transaction, as before: every notification
wakes every listening backend and every replica's listener (core.notifier),
and a burst of writes rang once per commit. Measured on the bench's POST
/Users (issue #16), the in-transaction NOTIFY cost ≈ 0.1 ms of CPU per
creation, about 8 % of it. Rung from here, a burst of writes to one
organisation wakes the fleet once per WINDOW_SECONDS; the first ring after a
quiet spell goes at once, so a lone deactivation is not delayed.

A ring is only a doorbell (core.notifier): readers catch up from the outbox
by sequence, and poll it every few seconds. A ring lost to a crash between
the commit and the send, or to a failed send, delays the other replicas by
at most that poll; it never loses a change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import asyncpg

from core.roles import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

# after a send, rings wait this long for the next (and are sent together)
WINDOW_SECONDS = 0.005
# after a failed send, the next try waits this long
RETRY_SECONDS = 1.0
# a send waits this long for a pooled connection, then counts as failed
ACQUIRE_TIMEOUT_SECONDS = 2.0

RING = "SELECT pg_notify($1, o) FROM unnest($2::text[]) AS o"


class Doorbell:
    """One per pool: `ring(org_id)` after a commit that wrote role changes."""

    def __init__(self, pool: asyncpg.Pool, *, window: float = WINDOW_SECONDS) -> None:
        self._pool = pool
        self._window = window
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.sent = 0  # notifications sent, for tests

    def ring(self, org_id: uuid.UUID) -> None:
        self._pending.add(str(org_id))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._pending:
            if await self._send_pending():
                await asyncio.sleep(self._window)
            else:
                await asyncio.sleep(RETRY_SECONDS)

    async def _send_pending(self) -> bool:
        orgs = sorted(self._pending)
        self._pending.clear()
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
                await conn.execute(RING, NOTIFY_CHANNEL, orgs)
        except BaseException as exc:
            self._pending.update(orgs)  # for the next try, or close()
            if not isinstance(exc, Exception):
                raise
            if not self._failing:  # one line per outage, not per try
                log.warning("role doorbell failed (replicas poll instead): %s", exc)
            self._failing = True
            return False
        if self._failing:
            log.info("role doorbell works again")
        self._failing = False
        self.sent += len(orgs)
        return True

    async def close(self, timeout: float = 1.0) -> None:
        """Send what is pending at once (within `timeout`), then stop."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._send_pending()
