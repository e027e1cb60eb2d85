"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from common.config import Settings

if TYPE_CHECKING:
    from scim2_models import SCIMException

    from gateway.activity import ActivityWriter
    from gateway.authlimit import AuthFailures
    from gateway.corechannel import CoreChannel
    from gateway.health import Lifecycle
    from gateway.search import SearchCalls

SETTINGS = web.AppKey("settings", Settings)
# the process's gRPC channel to the core and its resource services by endpoint
# ("Users", "Groups"); set up and torn down by the app's cleanup_ctx
CORE: web.AppKey[CoreChannel] = web.AppKey("core")
# the core's SearchService (POST /.search), on the current channel of CORE
SEARCH: web.AppKey[SearchCalls] = web.AppKey("search")
# metadata every SCIM call to the core carries besides the token and request
# id: the organisations' rate limit to charge (core.ratelimit), if any
CALL_METADATA: web.AppKey[tuple[tuple[str, str], ...]] = web.AppKey("call_metadata")
# failed authentications per client address (gateway.authlimit)
AUTH_FAILURES: web.AppKey[AuthFailures] = web.AppKey("auth_failures")

# whether the process is draining (gateway.health)
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
# sends each request's activity entry to the core (absent when WANDO_ACTIVITY=off)
ACTIVITY: web.AppKey[ActivityWriter] = web.AppKey("activity")

REQUEST_ID = web.RequestKey("request_id", str)
# what the activity entry needs that only a handler or the error renderer knows
FAILURE: web.RequestKey[SCIMException] = web.RequestKey("failure")
RESOURCE_ID = web.RequestKey("resource_id", str)  # the id a POST created
SEARCH_FILTER = web.RequestKey("search_filter", str)  # the filter of a POST …/.search
# the caller's bearer token, forwarded to the core; never logged
TOKEN = web.RequestKey("token", str)
