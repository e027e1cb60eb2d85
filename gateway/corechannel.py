"""The gateway's channel to the core: where it points, how it balances, what
it retries, and its renewal when its TLS files change. Every channel the
gateway opens to the core is made here (common.channels builds it).

WANDO_CORE takes (common.channels.target):
- HOST:PORT: one address (what `wando serve` and a single core use);
- a comma-separated list HOST:PORT,HOST:PORT,…: resolved once at start-up into
  a static list of addresses;
- any gRPC target with a scheme, e.g. dns:///core.internal:50051: every address
  the name resolves to, re-resolved by gRPC when connections fail.
Calls are spread over the addresses with gRPC's own round_robin; reads that
failed with UNAVAILABLE (a core that died or is restarting) are retried on
another connection, up to 3 attempts in all. Writes are never retried: one
that failed with UNAVAILABLE may have been applied, and the client decides
(it gets 503 with Retry-After). The core closes each connection after about
30 s (core.server.MAX_CONNECTION_AGE_MS), so connections spread again over
the core processes sharing a port and over cores added later.

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
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc

from common import channels, tls
from common.config import ConfigError, Settings

if TYPE_CHECKING:
    from gateway.resources import ResourceCalls

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0  # how often the TLS files are looked at (one stat each)

# Calls that change nothing, so a retry after UNAVAILABLE cannot apply anything twice.
SAFE_TO_RETRY = (
    ("wando.provisioning.v1.UserService", "GetUser"),
    ("wando.provisioning.v1.UserService", "ListUsers"),
    ("wando.provisioning.v1.GroupService", "GetGroup"),
    ("wando.provisioning.v1.GroupService", "ListGroups"),
    ("grpc.health.v1.Health", "Check"),
)

SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": service, "method": method} for service, method in SAFE_TO_RETRY],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}

CHANNEL_OPTIONS = (
    # a large group's membership can exceed gRPC's 4 MiB default
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    # reconnect soon after the core comes back (gRPC's default backoff reaches 2 min)
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
)

MakeCalls = Callable[[grpc.aio.Channel], dict[str, "ResourceCalls"]]


class CoreChannel:
    """The current channel and the resource services on it; read `calls` per request."""

    def __init__(
        self,
        settings: Settings,
        make_calls: MakeCalls,
        options: channels.Options,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        """`channel`: one made elsewhere (the local core, WANDO_CORE=local),
        used as it is: no TLS files, never renewed."""
        self._address = settings.core_address
        self._grace = settings.core_timeout_seconds
        self._tls = channels.client_tls(settings) if channel is None else None
        self._make_calls = make_calls
        self._options = options
        self._stamp = self._tls.stamp() if self._tls is not None else ()
        self._refused: tls.Stamp | None = None
        self._draining: set[asyncio.Task[None]] = set()
        if channel is not None:
            self.channel = channel
        else:
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
    settings: Settings,
    make_calls: MakeCalls,
    options: channels.Options,
    channel: grpc.aio.Channel | None = None,
) -> AsyncIterator[CoreChannel]:
    """The channel (or `channel`, given), watched for rotated TLS files while
    the block runs."""
    core = CoreChannel(settings, make_calls, options, channel)
    watcher = asyncio.create_task(core.watch()) if core.renews else None
    try:
        yield core
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await core.close()


def open_channel(core: str) -> grpc.aio.Channel:
    """A plaintext channel to the core at WANDO_CORE `core`, as the gateway's
    (the bench's baseline server uses it, option for option)."""
    return channels.aio_channel(core, None, CHANNEL_OPTIONS)
