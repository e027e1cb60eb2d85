"""The SCIM gateway's aiohttp application, and serving it.

`create_app(settings)` builds a root application that owns the process's
gRPC channel to the core (a cleanup context: opened on start-up, closed on
shutdown; renewed when its TLS files rotate) and mounts the SCIM application
at `settings.scim_prefix`. `create_app(settings, core)` uses the channel `core`
instead: with WANDO_CORE=local, the local core's (core.local, made by cli.run;
the gateway cannot tell it from a channel but by its speed).
`serving(settings)` runs it on `settings.http_listen` until the block exits,
then stops accepting connections and lets in-flight requests finish; its
runner answers requests aiohttp's parser refuses (gateway.protocol).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from aiohttp import web

from common.config import Settings
from common.wire import RATE_LIMIT_METADATA_KEY
from gateway import bulk, discovery, health, middlewares, search
from gateway.activity import activity_writer
from gateway.authlimit import AuthFailures
from gateway.corechannel import CHANNEL_OPTIONS, open_core_channel
from gateway.groups import Groups
from gateway.keys import AUTH_FAILURES, CALL_METADATA, CORE, LIFECYCLE, SEARCH, SETTINGS
from gateway.protocol import Limits, ScimAppRunner
from gateway.resources import ResourceCalls, ResourceEndpoints
from gateway.users import Users

log = logging.getLogger("gateway")


RESOURCE_TYPES: tuple[type[ResourceCalls], ...] = (Users, Groups)


def resource_calls(channel: grpc.aio.Channel) -> dict[str, ResourceCalls]:
    return {calls.endpoint: calls(channel) for calls in RESOURCE_TYPES}


def core_channel(
    given: grpc.aio.Channel | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context of the channel to the core, shared by all requests
    of this process (a new one after its TLS files rotate:
    gateway.corechannel); `given`: a channel made by whoever runs the gateway
    (the local core of WANDO_CORE=local, cli.run), used instead."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        async with open_core_channel(settings, resource_calls, CHANNEL_OPTIONS, given) as core:
            app[CORE] = core
            app[SEARCH] = search.SearchCalls(core)
            yield

    return context


def rate_limit_metadata(settings: Settings) -> tuple[tuple[str, str], ...]:
    """What asks the core to charge each call to the organisation's rate limit,
    kept in PostgreSQL for the whole fleet (core.ratelimit); nothing when off."""
    if settings.rate_limit_per_second <= 0:
        return ()
    limit = f"{settings.rate_limit_per_second:g} {settings.rate_limit_burst}"
    return ((RATE_LIMIT_METADATA_KEY, limit),)


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


def create_app(settings: Settings, core: grpc.aio.Channel | None = None) -> web.Application:
    """`core`: the channel to the core, if not one to WANDO_CORE (cli.run
    gives the local core's)."""
    limits = Limits(settings.max_line_bytes, settings.max_header_bytes, settings.max_headers)
    app = web.Application(
        client_max_size=settings.max_body_bytes, handler_args=limits.handler_args()
    )
    app[SETTINGS] = settings
    app.middlewares.extend(middlewares.root(app))
    app[LIFECYCLE] = health.Lifecycle()
    app[CALL_METADATA] = rate_limit_metadata(settings)
    app[AUTH_FAILURES] = AuthFailures(settings.auth_failure_per_second, settings.auth_failure_burst)
    app.cleanup_ctx.append(core_channel(core))
    health.add_routes(app)
    app.cleanup_ctx.append(activity_writer)  # torn down first: it still needs the channel
    app.add_subapp(settings.scim_prefix, create_scim_app())
    return app


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, *, reuse_port: bool = False, core: grpc.aio.Channel | None = None
) -> AsyncIterator[web.AppRunner]:
    """Serve the gateway on settings.http_listen for the duration of the block.
    `reuse_port`: share the port with other processes (SO_REUSEPORT), for the
    workers of `wando serve` only. `core`: as create_app's."""
    app = create_app(settings, core)
    runner = ScimAppRunner(  # gateway.protocol: SCIM errors for requests aiohttp refuses
        app,
        access_log=None,  # request_context logs each request, without secrets
        shutdown_timeout=settings.shutdown_grace_seconds,
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            settings.http_listen.host,
            settings.http_listen.port,
            reuse_port=reuse_port or None,
        )
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            shown = f"[{host}]" if ":" in host else host
            log.info("gateway listening on http://%s:%s%s", shown, port, settings.scim_prefix)
        yield runner
    finally:
        app[LIFECYCLE].draining = True  # /readyz answers 503 from here on
        await runner.cleanup()
