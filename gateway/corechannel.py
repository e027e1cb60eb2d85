"""The gateway's channel to the core, renewed when its TLS files change.

gRPC's client credentials cannot reload (grpc/grpc#41779), so when
WANDO_CORE_TLS_CA, _CERT or _KEY is rewritten (a rotation) the gateway opens a
new channel with the new files and sends new requests through it. The old
channel closes once its calls have had their deadline
(WANDO_CORE_TIMEOUT_SECONDS), so no request in flight is cut. Files that
cannot be used yet (a certificate replaced before its key) keep the current
channel until they agree. Without TLS there is one channel for the process's
life.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc

from core import channels, tls
from core.config import ConfigError, Settings

if TYPE_CHECKING:
    from gateway.resources import ResourceCalls

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0  # how often the TLS files are looked at (one stat each)

MakeCalls = Callable[[grpc.aio.Channel], dict[str, "ResourceCalls"]]


class CoreChannel:
    """The current channel and the resource services on it; read `calls` per request."""

    def __init__(
        self, settings: Settings, make_calls: MakeCalls, options: channels.Options
    ) -> None:
        self._address = settings.core_address
        self._grace = settings.core_timeout_seconds
        self._tls = channels.client_tls(settings)
        self._make_calls = make_calls
        self._options = options
        self._stamp = self._tls.stamp() if self._tls is not None else ()
        self._refused: tls.Stamp | None = None
        self._draining: set[asyncio.Task[None]] = set()
        try:
            self.channel = channels.aio_channel(self._address, self._tls, options)
        except tls.TLSFilesError as exc:
            raise ConfigError(f"WANDO_CORE_TLS_*: {exc}") from None
        self.calls = make_calls(self.channel)
        self.renewals = 0

    @property
    def renews(self) -> bool:
        """Whether there are TLS files to watch."""
        return self._tls is not None

    def renew_if_changed(self) -> bool:
        """A new channel if the TLS files changed and can be used; True if renewed."""
        if self._tls is None:
            return False
        now = self._tls.stamp()  # before reading: a change while reading shows next time
        if now == self._stamp:
            return False
        try:
            channel = channels.aio_channel(self._address, self._tls, self._options)
        except tls.TLSFilesError as exc:
            if now != self._refused:  # once per state of the files
                self._refused = now
                log.warning("gateway: keeping the current channel to the core: %s", exc)
            return False
        old = self.channel
        self._stamp, self.channel, self.calls = now, channel, self._make_calls(channel)
        self.renewals += 1
        task = asyncio.create_task(old.close(self._grace))  # in-flight calls finish first
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)
        log.info("gateway: TLS files changed; new requests reach the core on a new channel")
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                self.renew_if_changed()
            except Exception as exc:  # keep watching; the current channel still serves
                log.warning(
                    "gateway: could not renew the channel to the core: %s", type(exc).__name__
                )

    async def drained(self) -> None:
        """Wait until the channels replaced so far are closed."""
        await asyncio.gather(*self._draining)

    async def close(self) -> None:
        await self.channel.close()
        await self.drained()


@contextlib.asynccontextmanager
async def open_core_channel(
    settings: Settings, make_calls: MakeCalls, options: channels.Options
) -> AsyncIterator[CoreChannel]:
    """The channel, watched for rotated TLS files while the block runs."""
    core = CoreChannel(settings, make_calls, options)
    watcher = asyncio.create_task(core.watch()) if core.renews else None
    try:
        yield core
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await core.close()
