"""The gateway on a real aiohttp server, talking real gRPC to the real core
(root conftest: `core` on a fresh PostgreSQL database per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.server import CoreServer
from tests.gateway.support import ScimHttp, gateway, gateway_settings
from tests.support import new_org_with_token
from wando.provisioning.v1 import admin_service_pb2_grpc


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets GATEWAY_CORES = ("grpc", "local") runs each of its
    tests that reach the core through the gateway both ways: over gRPC to the
    test's core, and with the gateway hosting the core's SCIM services itself
    (WANDO_CORE=local, core.local), on the same database."""
    cores = getattr(metafunc.module, "GATEWAY_CORES", None)
    if cores and "gateway_core" in metafunc.fixturenames:
        metafunc.parametrize("gateway_core", cores)


@pytest.fixture
def gateway_core() -> str:
    """How the gateway reaches the core: "grpc" unless the module asks for more."""
    return "grpc"


@pytest.fixture
def core_env(core: CoreServer, gateway_core: str, database_dsn: str) -> dict[str, str]:
    """The gateway's settings that say where its core is (for gateway_settings)."""
    if gateway_core == "local":
        return {
            "WANDO_CORE": "local",
            "WANDO_DATABASE_URL": database_dsn,
            "WANDO_CURSOR_SECRET": "local-core-cursor-key-for-the-tests",
            "WANDO_DB_POOL_MIN": "1",
        }
    return {"WANDO_CORE": f"127.0.0.1:{core.port}"}


@pytest.fixture
async def client(core_env: dict[str, str]) -> AsyncIterator[TestClient[Any, Any]]:
    async with gateway(gateway_settings(**core_env)) as client:
        yield client


@pytest.fixture
async def scim(
    client: TestClient[Any, Any], admin_stub: admin_service_pb2_grpc.AdminServiceStub
) -> ScimHttp:
    """SCIM over HTTP as organisation "initech"."""
    _, secret = await new_org_with_token(admin_stub, "initech")
    return ScimHttp(client, secret)


@pytest.fixture
async def other(
    client: TestClient[Any, Any], admin_stub: admin_service_pb2_grpc.AdminServiceStub
) -> ScimHttp:
    """SCIM over HTTP as organisation "umbrella", a stranger to initech."""
    _, secret = await new_org_with_token(admin_stub, "umbrella")
    return ScimHttp(client, secret)


@pytest.fixture
def anonymous(client: TestClient[Any, Any]) -> ScimHttp:
    return ScimHttp(client)
