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


@pytest.fixture
async def client(core: CoreServer) -> AsyncIterator[TestClient[Any, Any]]:
    async with gateway(gateway_settings(f"127.0.0.1:{core.port}")) as client:
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
