"""The gateway's trace spans (common.tracing): one per SCIM request, named by
its route template, and one per call to the core, whose traceparent goes in
the call's metadata so that the core's spans join the request's trace.
Called only while traces are exported (common.tracing.tracer is set)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from common import tracing
from gateway import metrics
from gateway.keys import REQUEST_ID

Metadata = tuple[tuple[str, str], ...]


async def serve(
    tracer: trace.Tracer,
    request: web.Request,
    handle: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """`handle()` the request inside its server span. A traceparent the
    caller sent (a balancer, a client that traces) is the span's parent."""
    route = metrics.route_of(request)
    method = metrics.method_of(request)
    with tracer.start_as_current_span(
        f"{method} {route}",
        context=propagate.extract(request.headers),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": method,
            "http.route": route,
            "wando.request_id": request.get(REQUEST_ID, ""),
        },
        record_exception=False,  # a message may quote the request
        set_status_on_exception=False,
    ) as span:
        try:
            response = await handle()
        except BaseException as exc:
            tracing.error_status(span, type(exc).__name__)
            raise
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            tracing.error_status(span, str(response.status))
        return response


def start_core_call(
    tracer: trace.Tracer, method: Any, metadata: Metadata
) -> tuple[trace.Span, Metadata]:
    """The client span of a call to the core (`method`: the stub's
    multicallable) and the call's metadata with its traceparent."""
    rpc = metrics.rpc_name(method)
    service, _, name = rpc[1:].rpartition("/")
    span = tracer.start_span(
        rpc[1:],
        kind=SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return span, (*metadata, *carrier.items())


def end_core_call(span: trace.Span, code: str) -> None:
    if code != "OK":
        tracing.error_status(span, code)
    span.end()
