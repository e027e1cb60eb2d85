"""Every RPC of our four services is instrumented (core/instrumentation.py):
counted by method and status, errors rendered through errors.WIRE. (The
request id's way from the gateway to the core's logs: tests/gateway/test_http.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
from google.protobuf.descriptor import ServiceDescriptor
from prometheus_client import REGISTRY

from core.instrumentation import instrument
from core.server import ADMIN_SERVICE, GROUP_SERVICE, ROLE_SERVICE, USER_SERVICE
from tests.scim_client import Scim, fails
from tests.support import ADMIN, SERVICE, serving_grpc
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import admin_service_pb2_grpc, role_service_pb2_grpc
from wando.provisioning.v1 import group_service_pb2 as gpb
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import user_service_pb2 as upb


def count(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value("wando_grpc_requests_total", {"method": method, "code": code})
    return value or 0.0


async def counted(method: str, code: str, expected: float) -> float:
    """The count once it reaches `expected`, or after 2 s. A failed call is
    counted as its handler ends, which grpc.aio may reach just after the
    client has its status: abort() sends the status, then raises."""
    for _ in range(200):
        if count(method, code) == expected:
            break
        await asyncio.sleep(0.01)
    return count(method, code)


async def test_every_service_counts_its_calls_by_status(
    acme: Scim,
    admin_stub: admin_service_pb2_grpc.AdminServiceStub,
    roles_stub: role_service_pb2_grpc.RoleServiceStub,
) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    # (a call starts when it is made: each is made after its "before" is read)
    calls: dict[tuple[ServiceDescriptor, str, str], Callable[[], Any]] = {
        (ADMIN_SERVICE, "ListOrganizations", "OK"): lambda: admin_stub.ListOrganizations(
            apb.ListOrganizationsRequest(), metadata=ADMIN
        ),
        (USER_SERVICE, "GetUser", "NOT_FOUND"): lambda: acme.users.GetUser(
            upb.GetUserRequest(id=missing), metadata=acme.metadata
        ),
        (GROUP_SERVICE, "GetGroup", "NOT_FOUND"): lambda: acme.groups.GetGroup(
            gpb.GetGroupRequest(id=missing), metadata=acme.metadata
        ),
        (ROLE_SERVICE, "GetEffectiveRole", "UNAUTHENTICATED"): lambda: roles_stub.GetEffectiveRole(
            rpb.GetEffectiveRoleRequest(
                organization="acme", user=rpb.UserSelector(user_id=missing)
            ),
            metadata=ADMIN,  # not the service credential
        ),
    }
    for (service, name, code), call in calls.items():
        method = f"/{service.full_name}/{name}"
        before = count(method, code)
        if code == "OK":
            await call()
        else:
            await fails(call(), getattr(grpc.StatusCode, code))
        assert await counted(method, code, before + 1) == before + 1, (method, code)

    # a server stream too, ended by the client
    method = f"/{ROLE_SERVICE.full_name}/WatchRoleChanges"
    before = count(method, "CANCELLED")
    stream = roles_stub.WatchRoleChanges(
        rpb.WatchRoleChangesRequest(organization="acme"), metadata=SERVICE
    )
    await asyncio.sleep(0.3)
    stream.cancel()
    for _ in range(50):
        if count(method, "CANCELLED") == before + 1:
            break
        await asyncio.sleep(0.05)
    assert count(method, "CANCELLED") == before + 1


class RolledBack(role_service_pb2_grpc.RoleServiceServicer):
    """A RoleService whose one method meets what PostgreSQL answers when it
    rolls a transaction back to let another go on."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def GetEffectiveRole(self, request: Any, context: Any) -> Any:
        raise self.error


async def test_a_transaction_postgres_rolled_back_is_unavailable_not_internal() -> None:
    """A deadlock's victim or a serialisation failure applied nothing: the
    caller is told to retry (UNAVAILABLE, which the gateway answers 503 with
    Retry-After), not that the service broke (INTERNAL, a 500)."""
    for error in (
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.SerializationError("could not serialize access"),
    ):
        servicer = instrument(RolledBack(error), ROLE_SERVICE)
        add = role_service_pb2_grpc.add_RoleServiceServicer_to_server
        async with (
            serving_grpc(add, servicer) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = role_service_pb2_grpc.RoleServiceStub(channel)
            try:
                await stub.GetEffectiveRole(rpb.GetEffectiveRoleRequest())
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                assert "nothing was applied; retry" in (exc.details() or "")
            else:
                raise AssertionError("the call succeeded")
