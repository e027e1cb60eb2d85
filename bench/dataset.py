"""The data every workload runs on: organisations and tokens through the
admin gRPC API (as staff onboard a customer), groups mapped to roles through
it too, and the bulk of users and memberships by SQL (bench.seed), since
creating them is not what those workloads time. The peer gets the same users
and groups through its SCIM API (bench.peer_data)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import asyncpg

from bench import seed
from bench.seed import SeededUser
from bench.service import ADMIN, Service, core_tls
from bench.sizes import Sizes
from common import channels
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import admin_service_pb2_grpc, roles_pb2

ROLES = (roles_pb2.ROLE_ADMIN, roles_pb2.ROLE_BOSS, roles_pb2.ROLE_MEMBER)
ROLE_GROUP = "role group "
PATCH_GROUP = "patch group "
BIG_GROUP = "big group "
SAMPLE = 5_000  # ids handed to the load process for random picks


@dataclass(frozen=True)
class Org:
    slug: str
    id: str
    token: str


@dataclass
class Dataset:
    main: Org  # users: reads, writes, role lookups, the large import
    small: Org | None  # the small import (ours only)
    push: Org  # empty until the first push (the peer's: its one tenant)
    users: list[SeededUser]  # the main organisation's, in creation order
    sample: list[SeededUser]  # a random sample of them
    patch_groups: list[str]
    big_group: str
    big_group_name: str
    small_users: int
    outsiders: list[SeededUser]  # users of the main organisation not in the big group


async def _org(admin: admin_service_pb2_grpc.AdminServiceAsyncStub, slug: str) -> Org:
    org = await admin.CreateOrganization(
        apb.CreateOrganizationRequest(slug=slug, display_name=f"Bench {slug}"), metadata=ADMIN
    )
    issued = await admin.IssueScimToken(
        apb.IssueScimTokenRequest(organization=slug, description="bench"), metadata=ADMIN
    )
    return Org(slug, org.organization.id, issued.secret)


async def build(service: Service, pool: asyncpg.Pool, sizes: Sizes) -> Dataset:
    channel = channels.aio_channel(service.grpc_address, core_tls())
    try:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        main, small, push = [await _org(admin, slug) for slug in ("bench", "small", "push")]
        async with pool.acquire() as conn:
            await seed.groups(conn, main.id, ROLE_GROUP, sizes.role_groups)
        # mapped while still empty: mapping then changes nobody's role
        for n in range(1, sizes.role_groups + 1):
            await admin.SetGroupRole(
                apb.SetGroupRoleRequest(
                    organization=main.slug, group=f"{ROLE_GROUP}{n}", role=ROLES[n % 3]
                ),
                metadata=ADMIN,
            )
    finally:
        await channel.close()
    async with pool.acquire() as conn:
        users = await seed.users(conn, main.id, sizes.users)
        await seed.spread_members(conn, main.id, ROLE_GROUP)
        patch_groups = await seed.groups(conn, main.id, PATCH_GROUP, sizes.patch_groups)
        (big_group,) = await seed.groups(conn, main.id, BIG_GROUP, 1)
        await seed.members(conn, main.id, big_group, [u.id for u in users[: sizes.big_group]])
        await seed.users(conn, small.id, sizes.small_import_users)
        await conn.execute("ANALYZE")
    sample = random.Random(7).sample(users, min(SAMPLE, len(users)))
    return Dataset(
        main,
        small,
        push,
        users,
        sample,
        patch_groups,
        big_group,
        f"{BIG_GROUP}1",
        sizes.small_import_users,
        users[sizes.big_group :][:SAMPLE],
    )
