"""OpenTelemetry traces: a span for each SCIM request in the gateway, each call
it makes to the core, each RPC the core serves and each database statement
that RPC runs, one trace across both processes (W3C traceparent in the gRPC
metadata).

Exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; every other OTEL_* variable
(OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_BSP_*,
OTEL_EXPORTER_OTLP_HEADERS, …) is read by the SDK itself. Without an endpoint
no SDK is imported and no provider installed: `tracer` stays None and each
hot path pays one test of it, no span object, no context change.

Spans are written by hand at the three boundaries (gateway.traces,
core.instrumentation, TracedConnection below), not by the
opentelemetry-instrumentation-* packages: ours wrap the servicers in place
(core.instrumentation replaced interceptors for speed), and the packages would
add their interceptor and middleware whether exporting or not, and put query
text and peer details in attributes we keep to identifiers.

Attributes name only what the code names: the route template, the RPC, the SQL
operation and its first table, status codes, the request id. Never a token, a
filter or any value of a request, a user's or an organisation's name; no
organisation id either (the request id leads to it in the logs), and no
exception message (a core error's detail may quote a userName).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextvars import Token
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

# The tracer of this process while traces are exported, else None. Read it
# (`tracing.tracer`) on each call: tests set it with use().
tracer: trace.Tracer | None = None

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
INSTRUMENTATION_NAME = "wando"


def configured() -> bool:
    """Whether the environment asks for traces to be exported."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(os.environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def setup(service_name: str) -> TracerProvider | None:
    """Install an SDK tracer provider exporting over OTLP, if configured().
    `service_name` unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES names
    the service. Returns the provider (shut it down on the way out), or None."""
    if not configured():
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    if protocol.strip().lower() != "grpc":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: Wando exports OTLP over gRPC only", protocol)
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    use(provider)
    log.info("exporting traces over OTLP as %s", resource.attributes.get(SERVICE_NAME))
    return provider


def use(provider: trace.TracerProvider | None) -> None:
    """Trace with `provider` from now on (None: stop tracing)."""
    global tracer
    tracer = None if provider is None else provider.get_tracer(INSTRUMENTATION_NAME)


@contextlib.contextmanager
def exporting(service_name: str) -> Iterator[None]:
    """Traces exported for the block, if configured; the last spans are sent
    on the way out."""
    provider = setup(service_name)
    try:
        yield
    finally:
        if provider is not None:
            use(None)
            provider.shutdown()


def error_status(span: trace.Span, what: str) -> None:
    """Mark `span` failed, saying only `what` (a status or exception type name)."""
    span.set_status(StatusCode.ERROR, what)


# -- the RPCs the core serves ---------------------------------------------------


def start_rpc(
    current: trace.Tracer, method: str, metadata: Any, request_id: str
) -> tuple[trace.Span, Token[context.Context]]:
    """The server span of RPC `method` ("/package.Service/Method"), child of
    the caller's (its traceparent in `metadata`), made current until end_rpc."""
    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    parent = propagate.extract(carrier)
    service, _, name = method[1:].rpartition("/")
    span = current.start_span(
        method[1:],
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "wando.request_id": request_id,
        },
    )
    return span, context.attach(trace.set_span_in_context(span, parent))


def end_rpc(span: trace.Span, token: Token[context.Context], code: str) -> None:
    """End a span of start_rpc; `code` a grpc.StatusCode name or our own word."""
    context.detach(token)
    status = grpc.StatusCode.__members__.get(code)
    if status is not None:
        span.set_attribute("rpc.grpc.status_code", status.value[0])
    if code != "OK":
        error_status(span, code)
    span.end()


# -- database statements ------------------------------------------------------

_OPERATION = re.compile(r"\s*([A-Za-z]+)")
_TABLE = r"\s+([a-z_][a-z0-9_]*)\b"
_READ = re.compile(r"\bFROM" + _TABLE, re.IGNORECASE)
_WRITE = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)" + _TABLE, re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def statement_names(query: str) -> tuple[str, dict[str, Any]]:
    """A statement's span name and attributes: its operation and table
    ("INSERT users"; a WITH named by the write it holds, if any), identifiers
    read from our SQL, never a value (values are parameters)."""
    match = _OPERATION.match(query)
    operation = match[1].upper() if match else "SQL"
    write = _WRITE.search(query) if operation in ("WITH", "INSERT", "UPDATE", "DELETE") else None
    if write is not None:
        operation, table = write[1].split()[0].upper(), write[2]
    else:
        read = _READ.search(query) if operation in ("WITH", "SELECT") else None
        table = read[1] if read is not None else ""
        operation = "SELECT" if operation == "WITH" else operation
    attributes: dict[str, Any] = {"db.system.name": "postgresql", "db.operation.name": operation}
    if not table:
        return operation, attributes
    attributes["db.collection.name"] = table.lower()
    return f"{operation} {table.lower()}", attributes


@contextlib.contextmanager
def _statement(query: str) -> Iterator[None]:
    current = tracer
    # only inside a traced RPC: the notifier's pings and the pruner make no traces
    if current is None or not trace.get_current_span().get_span_context().is_valid:
        yield
        return
    name, attributes = statement_names(query)
    with current.start_as_current_span(
        name,
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except BaseException as exc:
            error_status(span, type(exc).__name__)
            raise


@contextlib.contextmanager
def linked_span(
    name: str, callers: Sequence[trace.SpanContext], attributes: dict[str, Any]
) -> Iterator[None]:
    """The span of work done for several callers at once (a batch), current for
    the block: the root of a trace of its own, linked to each caller's span,
    since it belongs to no one of them. Nothing while traces are not exported,
    or if no caller was traced."""
    current = tracer
    links = [trace.Link(c) for c in callers if c.is_valid]
    if current is None or not links:
        yield
        return
    with current.start_as_current_span(
        name, kind=SpanKind.INTERNAL, links=links, attributes=attributes
    ):
        yield


class TracedConnection(asyncpg.Connection):  # type: ignore[type-arg]
    """The pool's connections while traces are exported (core.db.create_pool):
    a span for each statement sent through the methods the core uses."""

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with _statement(query):
            return await super().execute(query, *args, **kwargs)

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
        with _statement(command):
            return await super().executemany(command, args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with _statement(query):
            return await super().fetch(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with _statement(query):
            return await super().fetchrow(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with _statement(query):
            return await super().fetchval(query, *args, **kwargs)

    async def fetchmany(self, query: str, args: Any, **kwargs: Any) -> Any:
        with _statement(query):
            return await super().fetchmany(query, args, **kwargs)


def connection_class() -> type[asyncpg.Connection]:  # type: ignore[type-arg]
    """The class of a new pool's connections: traced only while exporting, so
    that statements cost nothing more when traces are off."""
    return TracedConnection if tracer is not None else asyncpg.Connection
