"""The gateway's Prometheus metrics. No label holds an organisation, a token,
a raw path or a query: routes are the route templates ("/Users/{id}").
Served on WANDO_METRICS_LISTEN (core.metrics), summed over `wando serve`'s workers."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import Counter, Histogram

SCIM_REQUESTS = Counter(
    "wando_scim_requests_total", "SCIM HTTP requests answered", ["method", "route", "status"]
)
SCIM_DURATION = Histogram(
    "wando_scim_request_duration_seconds",
    "Time to answer a SCIM HTTP request",
    ["method", "route"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CORE_CALLS = Counter("wando_core_calls_total", "Gateway calls to the core", ["rpc", "code"])
CORE_CALL_DURATION = Histogram(
    "wando_core_call_duration_seconds",
    "Time of a gateway call to the core, by RPC",
    ["rpc"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REJECTIONS = Counter(
    "wando_scim_rejections_total",
    "SCIM requests refused before any work: rate_limit (429, the organisation's limit), "
    "auth_failures (429, too many failed authentications from an address), "
    "unauthenticated (401)",
    ["reason"],
)
RATE_LIMIT, AUTH_FAILURES, UNAUTHENTICATED = "rate_limit", "auth_failures", "unauthenticated"

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_rpc_names: dict[Any, str] = {}

# The labelled children each request updates, looked up once per label set:
# prometheus_client's labels() converts every value to str and takes a lock on
# each call. Label sets are few (methods by route templates by statuses), and the
# metrics keep every child they made anyway.
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_core_children: dict[tuple[Any, str], tuple[Any, Any]] = {}


UNMATCHED = "unmatched"


def route_of(request: web.Request) -> str:
    """The route template a request matched, or UNMATCHED."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED
    # the routes repeated after a "/" (gateway.app) count as the route itself
    return resource.canonical.replace("//", "/")


def method_of(request: web.Request) -> str:
    """The request's method, or "OTHER" for one HTTP does not define."""
    return request.method if request.method in _METHODS else "OTHER"


def observe_request(request: web.Request, route: str, status: int, seconds: float) -> None:
    """`route`: route_of(request)."""
    method = method_of(request)
    key = (method, route, status)
    children = _request_children.get(key)
    if children is None:
        children = _request_children[key] = (
            SCIM_REQUESTS.labels(method, route, str(status)),
            SCIM_DURATION.labels(method, route),
        )
    children[0].inc()
    children[1].observe(seconds)


def rpc_name(method: Any) -> str:
    """The RPC ("/package.Service/Method") of a stub's multicallable, read once."""
    rpc = _rpc_names.get(method)
    if rpc is None:
        raw = getattr(method, "_method", b"")
        rpc = raw.decode() if isinstance(raw, bytes) else str(raw or "unknown")
        _rpc_names[method] = rpc
    return rpc


def observe_core_call(method: Any, code: str, seconds: float) -> None:
    """`method`: the stub's multicallable."""
    children = _core_children.get((method, code))
    if children is None:
        rpc = rpc_name(method)
        children = _core_children[(method, code)] = (
            CORE_CALLS.labels(rpc, code),
            CORE_CALL_DURATION.labels(rpc),
        )
    children[0].inc()
    children[1].observe(seconds)
