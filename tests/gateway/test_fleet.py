"""The gateway as one of a fleet: the organisations' rate limit shared by every
gateway (kept in PostgreSQL by the core), health endpoints for balancers,
several cores behind one WANDO_CORE, and metrics whose labels say nothing of
any organisation. Real HTTP, real gRPC, the real core on real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from common import channels
from core.server import CoreServer, start_server
from gateway.keys import LIFECYCLE
from tests.gateway.support import ScimHttp, gateway, gateway_settings, okta_user
from tests.support import ADMIN_TOKEN, SERVICE_TOKEN, free_port, new_org_with_token
from wando.provisioning.v1 import admin_service_pb2_grpc

RATE, BURST, SECONDS = 5.0, 5, 10.0


async def test_one_tokens_requests_over_two_gateways_share_one_limit(
    core: CoreServer, admin_stub: admin_service_pb2_grpc.AdminServiceStub
) -> None:
    """Two gateways (as two processes would be) send one token's requests as
    fast as a busy identity provider, for 10 s: together they are admitted
    what the limit allows one organisation, within 20 %, not twice that."""
    _, secret = await new_org_with_token(admin_stub, "busy")
    limit = {"WANDO_RATE_LIMIT_PER_SECOND": f"{RATE:g}", "WANDO_RATE_LIMIT_BURST": str(BURST)}
    settings = gateway_settings(f"127.0.0.1:{core.port}", **limit)
    admitted = {"first": 0, "second": 0}
    refused: list[str] = []
    async with gateway(settings) as first, gateway(settings) as second:
        started = time.monotonic()
        deadline = started + SECONDS

        async def send(name: str, client: TestClient[Any, Any]) -> None:
            http = ScimHttp(client, secret)
            while time.monotonic() < deadline:
                reply = await http.get("/Users?count=1")
                if reply.status == 200:
                    admitted[name] += 1
                else:
                    reply.assert_error(429)
                    refused.append(reply.headers["Retry-After"])
                await asyncio.sleep(0.03)

        await asyncio.gather(*(send(n, c) for n, c in [("first", first), ("second", second)] * 2))
        elapsed = time.monotonic() - started
    allowed = BURST + RATE * elapsed
    total = sum(admitted.values())
    assert abs(total - allowed) <= 0.2 * allowed, (admitted, allowed)
    assert admitted["first"] > 0 and admitted["second"] > 0, admitted
    assert refused and all(int(wait) >= 1 for wait in refused)


async def test_the_limit_fails_open_when_its_store_does_not_answer(
    core: CoreServer, admin_stub: admin_service_pb2_grpc.AdminServiceStub, database_dsn: str
) -> None:
    _, secret = await new_org_with_token(admin_stub, "steady")
    settings = gateway_settings(
        f"127.0.0.1:{core.port}", WANDO_RATE_LIMIT_PER_SECOND="0.1", WANDO_RATE_LIMIT_BURST="1"
    )
    async with gateway(settings) as client:
        http = ScimHttp(client, secret)
        assert (await http.get("/Users")).status == 200
        (await http.get("/Users")).assert_error(429)
        blocker = await asyncpg.connect(database_dsn)
        try:
            async with blocker.transaction():
                await blocker.execute("LOCK TABLE rate_limits IN ACCESS EXCLUSIVE MODE")
                # the limiter's store hangs: requests pass rather than wait or fail
                statuses = [(await http.get("/Users")).status for _ in range(3)]
        finally:
            await blocker.close()
        assert statuses == [200, 200, 200]
        (await http.get("/Users")).assert_error(429)  # and the limit is back


async def test_healthz_and_readyz(core: CoreServer) -> None:
    async with gateway(gateway_settings(f"127.0.0.1:{core.port}")) as client:
        for path in ("/healthz", "/readyz"):
            async with client.get(path) as reply:  # no token
                assert reply.status == 200, await reply.text()
        client.app[LIFECYCLE].draining = True  # as gateway.app.serving does on SIGTERM
        async with client.get("/readyz") as reply:
            assert reply.status == 503 and "draining" in await reply.text()
            assert reply.headers["Retry-After"]
        async with client.get("/healthz") as reply:
            assert reply.status == 200  # still alive while it drains
    nowhere = gateway_settings(f"127.0.0.1:{free_port()}")  # no core listens there
    async with gateway(nowhere) as client:
        async with client.get("/healthz") as reply:
            assert reply.status == 200
        started = time.monotonic()
        async with client.get("/readyz") as reply:
            assert reply.status == 503
        assert time.monotonic() - started < 10  # a short deadline, not the client's timeout


async def test_a_gateway_spreads_over_several_cores_and_survives_one_stopping(
    core: CoreServer, pool: asyncpg.Pool, admin_stub: admin_service_pb2_grpc.AdminServiceStub
) -> None:
    other = await start_server(pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN)
    try:
        _, secret = await new_org_with_token(admin_stub, "spread")
        both = f"127.0.0.1:{core.port},127.0.0.1:{other.port}"
        assert channels.target(both) == f"ipv4:127.0.0.1:{core.port},127.0.0.1:{other.port}"
        async with gateway(gateway_settings(both)) as client:
            http = ScimHttp(client, secret)
            created = await http.post("/Users", okta_user("spread@example.com"))
            assert created.status == 201, created.text
            user = f"/Users/{created.body['id']}"
            assert {(await http.get(user)).status for _ in range(6)} == {200}
            await other.stop(0)
            # reads that meet the stopped core are retried on the other one
            assert {(await http.get(user)).status for _ in range(10)} == {200}
            assert (await http.get("/Users?count=1")).status == 200
    finally:
        await other.stop(0)


@pytest.mark.parametrize(
    ("core", "target"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("dns:///core.internal:50051", "dns:///core.internal:50051"),
        ("10.0.0.1:1, 10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        ("[::1]:1,[::2]:2", "ipv6:[::1]:1,[::2]:2"),
        ("localhost:7,127.0.0.2:8", None),  # names resolved once, at start-up
    ],
)
def test_core_addresses(core: str, target: str | None) -> None:
    resolved = channels.target(core)
    if target is not None:
        assert resolved == target
    else:
        assert resolved.startswith(("ipv4:", "ipv6:")) and resolved.endswith(":8")


async def test_metrics_name_routes_never_organisations_or_ids(scim: ScimHttp) -> None:
    created = await scim.post("/Users", okta_user("metered@example.com"))
    assert created.status == 201
    user_id = created.body["id"]
    before = _sample("wando_scim_requests_total", "GET", "/api/auth/scim/v2/Users/{id}", "200")
    assert (await scim.get(f"/Users/{user_id}")).status == 200
    assert (await scim.get("/Users?filter=userName%20eq%20%22metered%40example.com%22")).status
    after = _sample("wando_scim_requests_total", "GET", "/api/auth/scim/v2/Users/{id}", "200")
    assert after == before + 1
    assert (await scim.as_token("wando_scim_bad").get("/Users")).status == 401
    rejected = REGISTRY.get_sample_value(
        "wando_scim_rejections_total", {"reason": "unauthenticated"}
    )
    assert rejected is not None and rejected >= 1
    calls = REGISTRY.get_sample_value(
        "wando_core_call_duration_seconds_count",
        {"rpc": "/wando.provisioning.v1.UserService/GetUser"},
    )
    assert calls is not None and calls >= 1
    for family in REGISTRY.collect():
        for sample in family.samples:
            labels = " ".join(sample.labels.values())
            for secret_or_data in (user_id, "metered", "initech", scim.token or "-", "wando_scim"):
                assert secret_or_data not in labels, (sample.name, sample.labels)


def _sample(name: str, method: str, route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(name, {"method": method, "route": route, "status": status})
    return value or 0.0


def test_gateway_and_core_name_the_rate_limit_metadata_alike() -> None:
    """The one wire constant this adds, kept in both tiers until they share a home."""
    from core import ratelimit
    from gateway import app

    assert app.RATE_LIMIT_METADATA_KEY == ratelimit.METADATA_KEY
