"""The SCIM gateway's aiohttp application, and serving it.

`create_app(settings)` builds a root application that owns the process's
gRPC channel to the core (a cleanup context: opened on start-up, closed on
shutdown; renewed when its TLS files rotate) and mounts the SCIM application
at `settings.scim_prefix`.
`serving(settings)` runs it on `settings.http_listen` until the block exits,
then stops accepting connections and lets in-flight requests finish; its
runner answers requests aiohttp's parser refuses (gateway.protocol).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from aiohttp import web

from core.config import Settings
from gateway import bulk, discovery, middlewares, search
from gateway.authlimit import AuthFailures
from gateway.corechannel import open_core_channel
from gateway.groups import Groups
from gateway.keys import AUTH_FAILURES, CORE, ORG_LEARNER, RATE_LIMITER, SEARCH, SETTINGS
from gateway.protocol import Limits, ScimAppRunner
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


def resource_calls(channel: grpc.aio.Channel) -> dict[str, ResourceCalls]:
    return {calls.endpoint: calls(channel) for calls in RESOURCE_TYPES}


async def core_channel(app: web.Application) -> AsyncIterator[None]:
    """The channel to the core, shared by all requests of this process (a new
    one after its TLS files rotate: gateway.corechannel)."""
    app[ORG_LEARNER] = OrgLearner(app[RATE_LIMITER], app[AUTH_FAILURES].vouch)
    async with open_core_channel(app[SETTINGS], resource_calls, CHANNEL_OPTIONS) as core:
        app[CORE] = core
        app[SEARCH] = search.SearchCalls(core)
        yield


def create_scim_app() -> web.Application:
    scim = web.Application(middlewares=middlewares.SCIM)
    discovery.add_routes(scim)
    endpoints = {calls.endpoint: ResourceEndpoints.of(calls) for calls in RESOURCE_TYPES}
    for endpoint in endpoints.values():
        endpoint.add_routes(scim)
    bulk.add_routes(scim, endpoints)
    search.add_routes(scim)
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
    limits = Limits(settings.max_line_bytes, settings.max_header_bytes, settings.max_headers)
    app = web.Application(
        middlewares=middlewares.ROOT,
        client_max_size=settings.max_body_bytes,
        handler_args=limits.handler_args(),
    )
    app[SETTINGS] = settings
    app[RATE_LIMITER] = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app[AUTH_FAILURES] = AuthFailures(settings.auth_failure_per_second, settings.auth_failure_burst)
    app.cleanup_ctx.append(core_channel)
    app.add_subapp(settings.scim_prefix, create_scim_app())
    return app


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[web.AppRunner]:
    """Serve the gateway on settings.http_listen for the duration of the block."""
    runner = ScimAppRunner(  # gateway.protocol: SCIM errors for requests aiohttp refuses
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
