"""The local core (core.local): a channel to the core's services in this
process, with a gRPC call's semantics, as the gateway's stubs see them.
Real servicers on real PostgreSQL; a small servicer of the test's own where a
behaviour needs a handler that misbehaves on purpose."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from common.wire import ERROR_INFO_METADATA_KEY
from core.cursors import Cursors
from core.local import LocalContext, LocalCore, start_local_core
from tests.support import GATEWAY_TOKEN, new_org_with_token
from wando.provisioning.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)

Request = health_pb2.HealthCheckRequest
Response = health_pb2.HealthCheckResponse


class Probe:
    """Handlers for /test.Probe/*: what they were given, and how they ended."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.returned: list[Any] = []
        self.metadata: list[Any] = []
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def echo(self, request: Request, context: LocalContext) -> Response:
        self.received.append(request)
        self.metadata.append(context.invocation_metadata())
        response = Response(status=Response.SERVING)
        self.returned.append(response)
        return response

    async def abort(self, request: Request, context: LocalContext) -> Response:
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION, "not now", trailing_metadata=(("x-bin", b"\1"),)
        )

    async def fail(self, request: Request, context: LocalContext) -> Response:
        raise ValueError("wando_scim_secret-in-a-message")

    async def slow(self, request: Request, context: LocalContext) -> Response:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return Response()

    async def ask(self, request: Request, context: LocalContext) -> Response:
        context.set_code(grpc.StatusCode.OK)  # type: ignore[attr-defined]  # not offered
        return Response()


def probe_core() -> tuple[LocalCore, Probe]:
    core, probe = LocalCore(), Probe()
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(probe, name),
            request_deserializer=Request.FromString,
            response_serializer=Response.SerializeToString,
        )
        for name in ("echo", "abort", "fail", "slow", "ask")
    }
    core.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Probe", handlers),))
    return core, probe


def method(core: LocalCore, name: str) -> Any:
    return core.unary_unary(
        f"/test.Probe/{name}",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )


async def test_messages_are_copies_and_metadata_is_what_the_caller_gave() -> None:
    core, probe = probe_core()
    request = Request(service="users")
    metadata = (("authorization", "Bearer x"), ("x-request-id", "r-1"), ("k-bin", b"\0"))
    response = await method(core, "echo")(request, metadata=metadata, timeout=5)
    assert probe.received == [request] and probe.received[0] is not request
    assert response == probe.returned[0] and response is not probe.returned[0]
    assert probe.metadata == [metadata]


async def test_abort_is_an_aio_rpc_error_with_code_details_and_trailers() -> None:
    core, _ = probe_core()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(core, "abort")(Request())
    error = caught.value
    assert (error.code(), error.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "not now")
    assert list(error.trailing_metadata() or ()) == [("x-bin", b"\1")]


async def test_an_unrendered_exception_is_unknown_without_its_message() -> None:
    core, _ = probe_core()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(core, "fail")(Request())
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    assert "secret" not in (caught.value.details() or "")


async def test_the_deadline_cancels_the_handler_and_is_deadline_exceeded() -> None:
    core, probe = probe_core()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(core, "slow")(Request(), timeout=0.05)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert probe.cancelled.is_set()


async def test_a_cancelled_caller_cancels_the_handler() -> None:
    core, probe = probe_core()
    call = asyncio.ensure_future(method(core, "slow")(Request()))
    await probe.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(probe.cancelled.wait(), 5)


async def test_unknown_methods_closed_channels_and_unoffered_context_parts() -> None:
    core, _ = probe_core()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(core, "missing")(Request())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # NotImplementedError, not served
        await method(core, "ask")(Request())
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    with pytest.raises(NotImplementedError):
        core.unary_stream("/test.Probe/echo")(Request())
    await core.close()
    with pytest.raises(grpc.aio.UsageError):
        await method(core, "echo")(Request())


def _served(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value("wando_grpc_requests_total", {"method": method, "code": code})
    return value or 0.0


async def test_the_scim_services_are_the_cores_instrumented_ones(
    pool: asyncpg.Pool, admin_stub: admin_service_pb2_grpc.AdminServiceStub
) -> None:
    """Built by core.server.add_scim_services: the token check, the error
    trailer the gateway reads, and the core's metrics, as on the gRPC server."""
    core = await start_local_core(pool, Cursors(b"k" * 32), GATEWAY_TOKEN)
    _, secret = await new_org_with_token(admin_stub, "local")
    users = user_service_pb2_grpc.UserServiceStub(core)
    get = "/wando.provisioning.v1.UserService/GetUser"
    before = _served(get, "NOT_FOUND")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.GetUser(
            user_service_pb2.GetUserRequest(id="00000000-0000-0000-0000-000000000000"),
            metadata=(("authorization", f"Bearer {secret}"),),
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert any(key == ERROR_INFO_METADATA_KEY for key, _ in caught.value.trailing_metadata() or ())
    assert _served(get, "NOT_FOUND") == before + 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.GetUser(user_service_pb2.GetUserRequest(id="x"), metadata=())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    check = health_pb2_grpc.HealthStub(core).Check
    assert (await check(Request(service=""))).status == Response.SERVING
    # RoleService and AdminService stay on the cores
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_service_pb2_grpc.AdminServiceStub(core).ListOrganizations(
            admin_service_pb2.ListOrganizationsRequest()
        )
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
