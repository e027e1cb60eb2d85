"""Traces (common.tracing): one SCIM request through the real gateway and the
real core is one trace, from the HTTP request to the database statements,
with identifiers only in its attributes; without an OTLP endpoint nothing is
installed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from common import tracing
from core import db
from core.server import CoreServer, start_server
from tests.gateway.support import USER_URN, ScimHttp, gateway, gateway_settings
from tests.support import ADMIN_TOKEN, GATEWAY_TOKEN, SERVICE_TOKEN, new_org_with_token
from wando.provisioning.v1 import admin_service_pb2_grpc

# a caller's trace, as a balancer that traces would send it
CALLER_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans kept in memory, as an OTLP endpoint would receive them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


@pytest.fixture
async def traced_core(
    exported: InMemorySpanExporter, database_dsn: str
) -> AsyncIterator[CoreServer]:
    """A core whose pool was made while tracing (its statements are traced)."""
    pool = await db.create_pool(database_dsn, min_size=1, max_size=4)
    server = await start_server(
        pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN, gateway_token=GATEWAY_TOKEN
    )
    try:
        yield server
    finally:
        await server.stop(0)
        await pool.close()


async def _create_user(
    core: CoreServer, org: str, local_core_on: str | None = None, **headers: str
) -> tuple[str, int]:
    """`local_core_on`: a database DSN, for a gateway with WANDO_CORE=local on it."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
        _, secret = await new_org_with_token(admin_service_pb2_grpc.AdminServiceStub(channel), org)
    settings = (
        gateway_settings(f"127.0.0.1:{core.port}")
        if local_core_on is None
        else gateway_settings(
            "local", WANDO_DATABASE_URL=local_core_on, WANDO_CURSOR_SECRET="traces"
        )
    )
    async with gateway(settings) as client:
        reply = await ScimHttp(client, secret).post(
            "/Users",
            {"schemas": [USER_URN], "userName": "bjensen@example.com", "active": True},
            headers=dict(headers),
        )
    return secret, reply.status


def _request_span(spans: tuple[ReadableSpan, ...]) -> ReadableSpan:
    [span] = [s for s in spans if s.name == "POST /api/auth/scim/v2/Users"]
    return span


def _child(spans: tuple[ReadableSpan, ...], parent: ReadableSpan, kind: SpanKind) -> ReadableSpan:
    children = [
        s
        for s in spans
        if s.parent is not None and s.parent.span_id == parent.context.span_id and s.kind == kind
    ]
    assert children, f"no {kind.name} span under {parent.name}"
    return children[0]


@pytest.mark.parametrize("local", [False, True], ids=["grpc", "local"])
async def test_one_scim_request_is_one_trace_to_the_database(
    traced_core: CoreServer, exported: InMemorySpanExporter, database_dsn: str, local: bool
) -> None:
    """Also with the core's services in the gateway (WANDO_CORE=local): the
    same spans, the core's through the call's metadata as over gRPC."""
    secret, status = await _create_user(traced_core, "acme-traced", database_dsn if local else None)
    assert status == 201
    spans = exported.get_finished_spans()

    request = _request_span(spans)
    assert request.kind == SpanKind.SERVER
    assert request.parent is None
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/api/auth/scim/v2/Users"
    assert request.attributes["http.response.status_code"] == 201

    call = _child(spans, request, SpanKind.CLIENT)
    assert call.name == "wando.provisioning.v1.UserService/CreateUser"
    served = _child(spans, call, SpanKind.SERVER)  # in the core, through gRPC metadata
    assert served.name == "wando.provisioning.v1.UserService/CreateUser"
    assert served.attributes is not None
    assert served.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    statements = [
        s for s in spans if s.parent is not None and s.parent.span_id == served.context.span_id
    ]
    assert any(s.name == "INSERT users" for s in statements), [s.name for s in statements]
    trace_id = request.context.trace_id
    for span in (call, served, *statements):
        assert span.context.trace_id == trace_id
        assert span.attributes is not None
        assert span.attributes.get("db.system.name", "postgresql") == "postgresql"

    # identifiers only: no token, no user name, no organisation's name
    for span in spans:
        text = repr(dict(span.attributes or {})) + span.name + repr(span.status.description)
        for secret_or_name in (secret, "bjensen", "acme-traced"):
            assert secret_or_name not in text, (span.name, text)


async def test_a_callers_traceparent_is_the_requests_parent(
    traced_core: CoreServer, exported: InMemorySpanExporter
) -> None:
    _, status = await _create_user(traced_core, "acme-continued", traceparent=CALLER_TRACEPARENT)
    assert status == 201
    spans = exported.get_finished_spans()
    request = _request_span(spans)
    assert request.context.trace_id == CALLER_TRACE_ID
    served = _child(spans, _child(spans, request, SpanKind.CLIENT), SpanKind.SERVER)
    assert served.context.trace_id == CALLER_TRACE_ID


async def test_statements_outside_a_request_make_no_trace(
    traced_core: CoreServer, exported: InMemorySpanExporter, database_dsn: str
) -> None:
    pool = await db.create_pool(database_dsn, min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT 1") == 1  # as the notifier's ping
    finally:
        await pool.close()
    assert not [s for s in exported.get_finished_spans() if s.name.startswith("SELECT")]


def _in_a_fresh_process(code: str, **env: str) -> str:
    """`code` run by a new interpreter (the global provider is set once per
    process), with no OTEL_* variable but `env`; its stdout."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


PROBE = """
import sys
from opentelemetry import trace
from common import tracing
provider = tracing.setup("wando-core")
print(provider is not None and trace.get_tracer_provider() is provider)
print(tracing.connection_class().__name__)
print("opentelemetry.sdk" in sys.modules)
if provider is not None:
    print(provider.resource.attributes["service.name"])
    provider.shutdown()
"""


def test_without_an_endpoint_nothing_is_installed() -> None:
    assert _in_a_fresh_process(PROBE).split() == ["False", "Connection", "False"]


def test_an_endpoint_installs_the_exporting_provider() -> None:
    endpoint = "http://127.0.0.1:9"  # nothing listens; no span is sent here
    assert _in_a_fresh_process(PROBE, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint).split() == [
        "True",
        "TracedConnection",
        "True",
        "wando-core",
    ]
    named = _in_a_fresh_process(
        PROBE, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="scim-eu"
    )
    assert named.split()[-1] == "scim-eu"
    disabled = _in_a_fresh_process(
        PROBE, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SDK_DISABLED="true"
    )
    assert disabled.split() == ["False", "Connection", "False"]
