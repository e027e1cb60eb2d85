"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from core.config import Settings

if TYPE_CHECKING:
    import grpc
    from scim2_models import SCIMException

    from gateway.activity import ActivityWriter
    from gateway.authlimit import AuthFailures
    from gateway.ratelimit import OrgLearner, RateLimiter
    from gateway.resources import ResourceCalls

SETTINGS = web.AppKey("settings", Settings)
# the core's resource services by endpoint ("Users", "Groups"), on the one
# gRPC channel of the process; set up and torn down by the app's cleanup_ctx
CORE: web.AppKey[dict[str, ResourceCalls]] = web.AppKey("core")
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
# reads each core answer's trailers for the rate limiter and AUTH_FAILURES
ORG_LEARNER: web.AppKey[OrgLearner] = web.AppKey("org_learner")
# failed authentications per client address (gateway.authlimit)
AUTH_FAILURES: web.AppKey[AuthFailures] = web.AppKey("auth_failures")

# the process's one channel to the core
CHANNEL: web.AppKey[grpc.aio.Channel] = web.AppKey("channel")
# sends each request's activity entry to the core (absent when WANDO_ACTIVITY=off)
ACTIVITY: web.AppKey[ActivityWriter] = web.AppKey("activity")

REQUEST_ID = web.RequestKey("request_id", str)
# what the activity entry needs that only a handler or the error renderer knows
FAILURE: web.RequestKey[SCIMException] = web.RequestKey("failure")
RESOURCE_ID = web.RequestKey("resource_id", str)  # the id a POST created
SEARCH_FILTER = web.RequestKey("search_filter", str)  # the filter of a POST …/.search
# the caller's bearer token, forwarded to the core; never logged
TOKEN = web.RequestKey("token", str)
