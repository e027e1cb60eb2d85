"""Traces from `wando serve`'s worker processes: with OTEL_EXPORTER_OTLP_ENDPOINT
set, the gateway worker and the core worker each export over OTLP/gRPC, under
their own service names, one trace per SCIM request from the HTTP request to
the SQL (with the gateways hosting the core's SCIM services, the default, the
whole trace is the gateway's). The collector here is a real OTLP/gRPC
receiver (opentelemetry-proto's TraceService) on a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.drills.faults_support import WandoProcess, new_org, service_env
from tests.gateway.support import PREFIX, okta_user
from tests.support import free_port, serving_grpc

READY = "serving with 1 core and 1 gateway workers"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """What an OpenTelemetry collector receives: (service.name, span)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@asynccontextmanager
async def collecting() -> AsyncIterator[tuple[Collector, int]]:
    collector = Collector()
    add = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
    async with serving_grpc(add, collector) as port:
        yield collector, port


def _by_id(spans: list[tuple[str, Span]]) -> dict[bytes, tuple[str, Span]]:
    return {span.span_id: (service, span) for service, span in spans}


@pytest.mark.parametrize("gateway_core", ["local", "grpc"])
async def test_each_worker_exports_its_part_of_one_trace(
    database_dsn: str, tmp_path: Path, gateway_core: str
) -> None:
    grpc_listen, http_listen = (f"127.0.0.1:{free_port()}" for _ in range(2))
    async with collecting() as (collector, port):
        env = service_env(
            WANDO_DATABASE_URL=database_dsn,
            WANDO_DATA_DIR=str(tmp_path / "data"),
            WANDO_GRPC_LISTEN=grpc_listen,
            WANDO_HTTP_LISTEN=http_listen,
            WANDO_WORKERS="1",
            WANDO_LOG_LEVEL="info",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_BSP_SCHEDULE_DELAY="100",  # milliseconds between batches
            WANDO_SERVE_GATEWAY_CORE=gateway_core,
        )
        serve = await WandoProcess.start("serve", env=env, ready=READY)
        try:
            secret = await new_org(grpc_listen, "initech")
            async with (
                aiohttp.ClientSession() as client,
                client.post(
                    f"http://{http_listen}{PREFIX}/Users",
                    json=okta_user("traced.user@initech.example"),
                    headers={"Authorization": f"Bearer {secret}"},
                ) as reply,
            ):
                assert reply.status == 201, await reply.text()
            [request] = await _request_spans(collector)
            trace_id = request.trace_id

            async def whole_trace() -> list[tuple[str, Span]]:
                while True:
                    mine = [(s, span) for s, span in collector.spans if span.trace_id == trace_id]
                    if any(span.name.startswith("INSERT ") for _, span in mine):
                        return mine
                    await asyncio.sleep(0.1)

            found = await asyncio.wait_for(whole_trace(), timeout=30)
        finally:
            assert await serve.terminate() == 0, serve.log

    spans = _by_id(found)
    insert = next(span for _, span in found if span.name == "INSERT users")
    core = "wando-gateway" if gateway_core == "local" else "wando-core"  # who served the RPC
    chain = [(core, insert)]
    while chain[-1][1].parent_span_id:
        chain.append(spans[chain[-1][1].parent_span_id])
    assert [(service, span.name, span.kind) for service, span in chain] == [
        (core, "INSERT users", Span.SPAN_KIND_CLIENT),
        (core, "wando.provisioning.v1.UserService/CreateUser", Span.SPAN_KIND_SERVER),
        ("wando-gateway", "wando.provisioning.v1.UserService/CreateUser", Span.SPAN_KIND_CLIENT),
        ("wando-gateway", "POST /api/auth/scim/v2/Users", Span.SPAN_KIND_SERVER),
    ]
    assert "exporting traces over OTLP as wando-gateway" in serve.log
    assert "exporting traces over OTLP as wando-core" in serve.log
    for _, span in found:
        assert secret not in str(span) and "traced.user" not in str(span)


async def _request_spans(collector: Collector) -> list[Span]:
    """The gateway's span of the POST, once it has arrived."""

    async def arrived() -> list[Span]:
        while True:
            found = [
                span
                for service, span in collector.spans
                if service == "wando-gateway" and span.name == "POST /api/auth/scim/v2/Users"
            ]
            if found:
                return found
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(arrived(), timeout=30)
