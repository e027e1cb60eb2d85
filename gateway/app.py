"""The SCIM gateway's aiohttp application, and serving it.

`create_app(settings)` builds a root application that owns the process's one
gRPC channel to the core (a cleanup context: opened on start-up, closed on
shutdown) and mounts the SCIM application at `settings.scim_prefix`.
`serving(settings)` runs it on `settings.http_listen` until the block exits,
then stops accepting connections and lets in-flight requests finish.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from aiohttp import web

from core.config import Settings
from gateway import discovery, middlewares
from gateway.activity import activity_writer
from gateway.authlimit import AuthFailures
from gateway.groups import Groups
from gateway.keys import AUTH_FAILURES, CHANNEL, CORE, ORG_LEARNER, RATE_LIMITER, SETTINGS
from gateway.ratelimit import OrgLearner, RateLimiter
from gateway.resources import ResourceCalls, ResourceEndpoints
from gateway.users import Users

log = logging.getLogger("gateway")

RESOURCE_TYPES: tuple[type[ResourceCalls], ...] = (Users, Groups)

CHANNEL_OPTIONS = (
    # a large group's membership can exceed gRPC's 4 MiB default
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    # reconnect soon after the core comes back (gRPC's default backoff reaches 2 min)
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


async def core_channel(app: web.Application) -> AsyncIterator[None]:
    """The one channel to the core, shared by all requests of this process."""
    channel = grpc.aio.insecure_channel(app[SETTINGS].core_address, options=CHANNEL_OPTIONS)
    app[CHANNEL] = channel
    app[ORG_LEARNER] = OrgLearner(app[RATE_LIMITER], app[AUTH_FAILURES].vouch)
    app[CORE] = {calls.endpoint: calls(channel) for calls in RESOURCE_TYPES}
    try:
        yield
    finally:
        await channel.close()


def create_scim_app() -> web.Application:
    scim = web.Application(middlewares=middlewares.SCIM)
    discovery.add_routes(scim)
    for calls in RESOURCE_TYPES:
        ResourceEndpoints.of(calls).add_routes(scim)
    _also_after_a_trailing_slash(scim)
    return scim


def _also_after_a_trailing_slash(scim: web.Application) -> None:
    """Every route once more with a leading "/": a base URL pasted into Okta or
    Entra with a trailing slash makes them call …/scim/v2//Users, and a 404
    there fails the customer's connection test for a typo."""
    for route in list(scim.router.routes()):
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if isinstance(path, str):
            scim.router.add_route(route.method, "/" + path, route.handler)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=middlewares.ROOT, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[RATE_LIMITER] = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app[AUTH_FAILURES] = AuthFailures(settings.auth_failure_per_second, settings.auth_failure_burst)
    app.cleanup_ctx.append(core_channel)
    app.cleanup_ctx.append(activity_writer)  # torn down first: it still needs the channel
    app.add_subapp(settings.scim_prefix, create_scim_app())
    return app


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[web.AppRunner]:
    """Serve the gateway on settings.http_listen for the duration of the block."""
    runner = web.AppRunner(
        create_app(settings),
        access_log=None,  # request_context logs each request, without secrets
        shutdown_timeout=settings.shutdown_grace_seconds,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.http_listen.host, settings.http_listen.port)
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            shown = f"[{host}]" if ":" in host else host
            log.info("gateway listening on http://%s:%s%s", shown, port, settings.scim_prefix)
        yield runner
    finally:
        await runner.cleanup()
