"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from core.config import Settings

if TYPE_CHECKING:
    from gateway.authlimit import AuthFailures
    from gateway.health import HealthCheck, Lifecycle
    from gateway.resources import ResourceCalls

SETTINGS = web.AppKey("settings", Settings)
# the core's resource services by endpoint ("Users", "Groups"), on the one
# gRPC channel of the process; set up and torn down by the app's cleanup_ctx
CORE: web.AppKey[dict[str, ResourceCalls]] = web.AppKey("core")
# metadata every SCIM call to the core carries besides the token and request
# id: the organisations' rate limit to charge (core.ratelimit), if any
CALL_METADATA: web.AppKey[tuple[tuple[str, str], ...]] = web.AppKey("call_metadata")
# failed authentications per client address (gateway.authlimit)
AUTH_FAILURES: web.AppKey[AuthFailures] = web.AppKey("auth_failures")

# the standard gRPC health service of the core, on the same channel (gateway.health)
CORE_HEALTH: web.AppKey[HealthCheck] = web.AppKey("core_health")
# whether the process is draining (gateway.health)
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")

REQUEST_ID = web.RequestKey("request_id", str)
# the caller's bearer token, forwarded to the core; never logged
TOKEN = web.RequestKey("token", str)
