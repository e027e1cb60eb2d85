"""Issue #5's speed claim, measured: GetEffectiveRole (and a batch of 100)
against an empty RPC (the health check) on the same server, in the same run.

Run: .venv/bin/python -m bench.roles [--quick]
Prints requests/s, p50 and p99 for each, and the ratios; writes
bench/out/roles.json. Client and server share this process and its 2 cores,
so the figures are for comparison within the run, not absolute capacity
(issue #7 moves load to a separate process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import SERVICE_TOKEN, Stack, bulk_users, stack
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import role_service_pb2_grpc

OUT = Path(__file__).parent / "out"
SERVICE = (("authorization", f"Bearer {SERVICE_TOKEN}"),)

# groups mapped to roles, and each user in a few of them
SEED_GROUPS = """
INSERT INTO groups (org_id, group_id, display_name, attributes)
SELECT $1, gen_random_uuid(), 'group ' || g, jsonb_build_object('displayName', 'group ' || g)
FROM generate_series(1, $2::int) AS g
"""
SEED_ROLES = """
INSERT INTO group_roles (org_id, group_id, role)
SELECT org_id, group_id, (ARRAY['admin', 'boss', 'member'])[1 + (row_number() OVER ()) % 3]
FROM groups WHERE org_id = $1
"""
SEED_MEMBERS = """
INSERT INTO group_members (org_id, group_id, user_id)
SELECT u.org_id, g.group_id, u.user_id
FROM users u
CROSS JOIN LATERAL (
    SELECT group_id FROM groups WHERE org_id = u.org_id
    ORDER BY md5(u.user_id::text || group_id::text) LIMIT 3
) g
WHERE u.org_id = $1
ON CONFLICT DO NOTHING
"""


async def load(
    call: Callable[[], Awaitable[Any]], seconds: float, concurrency: int
) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


async def measure(s: Stack, users: int, seconds: float) -> dict[str, Any]:
    ids = await bulk_users(s.pool, s.org_id, 1, users)
    async with s.pool.acquire() as conn:
        await conn.execute(SEED_GROUPS, s.org_id, 30)
        await conn.execute(SEED_ROLES, s.org_id)
        await conn.execute(SEED_MEMBERS, s.org_id)
        await conn.execute("ANALYZE")
    health = health_pb2_grpc.HealthStub(s.channel)
    roles = role_service_pb2_grpc.RoleServiceStub(s.channel)
    rng = random.Random(7)

    async def empty() -> None:
        await health.Check(health_pb2.HealthCheckRequest())

    async def by_id() -> None:
        selector = rpb.UserSelector(user_id=rng.choice(ids))
        await roles.GetEffectiveRole(
            rpb.GetEffectiveRoleRequest(organization="bench", user=selector), metadata=SERVICE
        )

    async def by_user_name() -> None:
        selector = rpb.UserSelector(user_name=f"USER{rng.randint(1, users)}@bench.example")
        await roles.GetEffectiveRole(
            rpb.GetEffectiveRoleRequest(organization="bench", user=selector), metadata=SERVICE
        )

    async def batch() -> None:
        selectors = [rpb.UserSelector(user_id=i) for i in rng.sample(ids, 100)]
        await roles.BatchGetEffectiveRoles(
            rpb.BatchGetEffectiveRolesRequest(organization="bench", users=selectors),
            metadata=SERVICE,
        )

    await load(by_id, 1, 8)  # warm up pools and caches
    results: dict[str, Any] = {"users": users}
    for name, call in (
        ("empty RPC (health check)", empty),
        ("GetEffectiveRole by id", by_id),
        ("GetEffectiveRole by userName", by_user_name),
        ("BatchGetEffectiveRoles x100", batch),
    ):
        results[name] = await load(call, seconds, 16)
    base = results["empty RPC (health check)"]["per_second"]
    for name in list(results):
        if isinstance(results[name], dict):
            results[name]["ratio_to_empty"] = results[name]["per_second"] / base
    return results


async def main(quick: bool) -> None:
    users, seconds = (2_000, 2.0) if quick else (100_000, 10.0)
    async with stack() as s:
        results = await measure(s, users, seconds)
    OUT.mkdir(exist_ok=True)
    (OUT / "roles.json").write_text(json.dumps(results, indent=2))
    print(f"Role lookups at {users} users, 16 in flight, {seconds:g} s each:")
    print(f"  {'workload':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs empty':>9}")
    for name, row in results.items():
        if isinstance(row, dict):
            print(
                f"  {name:32} {row['per_second']:8.0f} {row['p50_ms']:8.2f}"
                f" {row['p99_ms']:8.2f} {row['ratio_to_empty']:9.2f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    asyncio.run(main(parser.parse_args().quick))
