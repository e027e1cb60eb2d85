"""Shared set-up for benchmarks: a fresh embedded PostgreSQL, a migrated
database and the core's gRPC server, all on this machine."""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from core import db, embedded
from core.server import CoreServer, start_server
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import admin_service_pb2_grpc

ADMIN_TOKEN = "wando_admin_bench"
SERVICE_TOKEN = "wando_svc_bench"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


@dataclass
class Stack:
    pool: asyncpg.Pool
    core: CoreServer
    channel: grpc.aio.Channel
    org_id: str
    secret: str

    @property
    def scim(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.secret}"),)


@contextlib.asynccontextmanager
async def stack() -> AsyncIterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="wando-bench-") as tmp:
        pg = await embedded.start(Path(tmp))
        try:
            pool = await db.connect_and_migrate(pg.dsn, min_size=4, max_size=20)
            core = await start_server(pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{core.port}")
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            org = await admin.CreateOrganization(
                apb.CreateOrganizationRequest(slug="bench"), metadata=ADMIN
            )
            issued = await admin.IssueScimToken(
                apb.IssueScimTokenRequest(organization="bench"), metadata=ADMIN
            )
            try:
                yield Stack(pool, core, channel, org.organization.id, issued.secret)
            finally:
                await channel.close()
                await core.stop(0)
                await pool.close()
        finally:
            await pg.stop()


# users straight into the table (the benchmarks time other things)
BULK_USERS = """
INSERT INTO users (org_id, user_id, user_name, external_id, display_name, active, attributes)
SELECT $1, gen_random_uuid(), 'user' || g || '@bench.example', 'ext-' || g, 'User ' || g, true,
       jsonb_build_object(
           'userName', 'user' || g || '@bench.example', 'externalId', 'ext-' || g,
           'displayName', 'User ' || g, 'active', true,
           'name', jsonb_build_object('givenName', 'User', 'familyName', 'N' || g),
           'emails', jsonb_build_array(jsonb_build_object(
               'value', 'user' || g || '@bench.example', 'type', 'work', 'primary', true)))
FROM generate_series($2::int, $3::int) AS g
"""

BULK_EMAILS = """
INSERT INTO user_emails (org_id, user_id, value_lower)
SELECT org_id, user_id, lower(user_name) FROM users WHERE org_id = $1
ON CONFLICT DO NOTHING
"""


async def bulk_users(pool: asyncpg.Pool, org_id: str, first: int, last: int) -> list[str]:
    async with pool.acquire() as conn:
        await conn.execute(BULK_USERS, org_id, first, last)
        await conn.execute(BULK_EMAILS, org_id)
        await conn.execute("ANALYZE")
        rows = await conn.fetch(
            "SELECT user_id::text FROM users WHERE org_id = $1 ORDER BY created_at, user_id", org_id
        )
    return [r["user_id"] for r in rows]


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    """Wall-clock seconds of each of `repeat` sequential calls."""
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        out.append(time.perf_counter() - started)
    return out


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000
