"""Properties of the consistency choice on two core replicas of one database
(issue 16 §3), under random write sequences and forced faults.

After every step of random SCIM writes (through either replica's gRPC),
mapping and default-role changes, lost notifications and dropped LISTEN
connections:

- fully_consistent answers, from either replica, are the database's;
- at_least_as_fresh with the latest sequence is exactly that answer, at once;
- minimize_latency answers converge to it within a bound (CONVERGE_SECONDS,
  generous: a bound on the test, not a measurement).

And the change stream, read live by a watcher while several writers commit
concurrently on both replicas, is gap-free and in order: a sequence handed
out before commit would let the watcher, which reads `seq > last`, skip a
late-committing row for good.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from core import db
from core.role_service import RoleOptions
from core.server import start_server
from tests.scim_client import Scim, okta_user, ops
from tests.support import ADMIN, ADMIN_TOKEN, SERVICE, SERVICE_TOKEN, new_org_with_token
from tests.test_role_cache import CONVERGE_SECONDS, Replica
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import group_service_pb2 as gpb
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import roles_pb2
from wando.provisioning.v1 import user_service_pb2 as upb

R = roles_pb2
FAST = RoleOptions(poll_seconds=0.2, ping_seconds=0.2)
LATENCY = rpb.Consistency(minimize_latency=True)
EXACT = rpb.Consistency(fully_consistent=True)
ROLES = [R.ROLE_ADMIN, R.ROLE_BOSS, R.ROLE_MEMBER]
VALUES = ["x", "y"]
N_USERS = 4
N_GROUPS = 2
_slugs = itertools.count()


@pytest.fixture
async def pair(database_dsn: str) -> AsyncIterator[list[Replica]]:
    out: list[Replica] = []
    pools: list[asyncpg.Pool] = []
    try:
        for _ in range(2):
            pool = await db.create_pool(database_dsn, min_size=1, max_size=8)
            pools.append(pool)
            core = await start_server(
                pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN, role_options=FAST
            )
            out.append(Replica(core, grpc.aio.insecure_channel(f"127.0.0.1:{core.port}")))
        yield out
    finally:
        for replica in out:
            await replica.channel.close()
            await replica.core.stop(0)
        for pool in pools:
            await pool.close()


STEPS = st.one_of(
    st.tuples(st.just("active"), st.integers(0, N_USERS - 1), st.booleans()),
    st.tuples(st.just("values"), st.integers(0, N_USERS - 1), st.sets(st.sampled_from(VALUES))),
    st.tuples(st.just("user_name"), st.integers(0, N_USERS - 1), st.integers(0, 99)),
    st.tuples(st.just("member"), st.integers(0, N_GROUPS - 1), st.integers(0, N_USERS - 1)),
    st.tuples(st.just("group_name"), st.integers(0, N_GROUPS - 1), st.integers(0, 99)),
    st.tuples(st.just("map_group"), st.integers(0, N_GROUPS - 1), st.sampled_from([0, *ROLES])),
    st.tuples(st.just("map_value"), st.sampled_from(VALUES), st.sampled_from([0, *ROLES])),
    st.tuples(st.just("default"), st.just(0), st.sampled_from(ROLES)),
    st.tuples(st.just("delete_user"), st.integers(0, N_USERS - 1), st.just(0)),
    st.tuples(st.just("deaf"), st.integers(0, 1), st.booleans()),
    st.tuples(st.just("drop"), st.integers(0, 1), st.just(0)),
)


class World:
    def __init__(self, pair: list[Replica], slug: str, secret: str) -> None:
        self.pair = pair
        self.slug = slug
        self.scims = [Scim(r.channel, secret) for r in pair]
        self.users: list[str | None] = []
        self.groups: list[str] = []
        self.members: list[set[int]] = [set() for _ in range(N_GROUPS)]

    async def setup(self) -> None:
        for i in range(N_USERS):
            created = await self.scims[i % 2].create_user(okta_user(f"u{i}@x.example"))
            self.users.append(created["id"])
        for g in range(N_GROUPS):
            group = await self.scims[g % 2].create_group({"displayName": f"g{g}"})
            self.groups.append(group["id"])

    async def apply(self, step: tuple[str, Any, Any], via: int) -> None:
        kind, a, b = step
        scim, admin = self.scims[via], self.pair[via].admin
        if kind in ("active", "values", "user_name", "delete_user"):
            user = self.users[a]
            if user is None:
                return
            if kind == "delete_user":
                await scim.delete_user(user)
                self.users[a] = None
                for members in self.members:
                    members.discard(a)
                return
            value: Any
            if kind == "active":
                path, value = "active", b
            elif kind == "values":
                path, value = "roles", [{"value": v} for v in sorted(b)]
            else:
                path, value = "userName", f"u{a}-{b}@x.example"
            await scim.users.PatchUser(
                upb.PatchUserRequest(
                    id=user, operations=ops({"op": "replace", "path": path, "value": value})
                ),
                metadata=scim.metadata,
            )
        elif kind == "member":
            user = self.users[b]
            if user is None:
                return
            op = "remove" if b in self.members[a] else "add"
            operation = (
                {"op": "remove", "path": f'members[value eq "{user}"]'}
                if op == "remove"
                else {"op": "add", "path": "members", "value": [{"value": user}]}
            )
            await scim.groups.PatchGroup(
                gpb.PatchGroupRequest(id=self.groups[a], operations=ops(operation)),
                metadata=scim.metadata,
            )
            self.members[a] ^= {b}
        elif kind == "group_name":
            name = f"g{a}-{b}"
            await scim.groups.PatchGroup(
                gpb.PatchGroupRequest(
                    id=self.groups[a],
                    operations=ops({"op": "replace", "path": "displayName", "value": name}),
                ),
                metadata=scim.metadata,
            )
        elif kind == "map_group":
            if b:
                request = apb.SetGroupRoleRequest(organization=self.slug, group=self.groups[a])
                request.role = b
                await admin.SetGroupRole(request, metadata=ADMIN)
            else:
                with _tolerate(grpc.StatusCode.NOT_FOUND):
                    await admin.ClearGroupRole(
                        apb.ClearGroupRoleRequest(organization=self.slug, group=self.groups[a]),
                        metadata=ADMIN,
                    )
        elif kind == "map_value":
            if b:
                value_request = apb.SetRoleValueMappingRequest(organization=self.slug, value=a)
                value_request.role = b
                await admin.SetRoleValueMapping(value_request, metadata=ADMIN)
            else:
                with _tolerate(grpc.StatusCode.NOT_FOUND):
                    await admin.ClearRoleValueMapping(
                        apb.ClearRoleValueMappingRequest(organization=self.slug, value=a),
                        metadata=ADMIN,
                    )
        elif kind == "default":
            default = apb.SetDefaultRoleRequest(organization=self.slug)
            default.role = b
            await admin.SetDefaultRole(default, metadata=ADMIN)
        elif kind == "deaf":
            self.pair[a].core.notifier.deaf = b
        elif kind == "drop":
            self.pair[a].core.notifier.drop_connection()

    async def answer(
        self, replica: Replica, user: str, consistency: rpb.Consistency
    ) -> tuple[str, int]:
        """The answer (as text, to compare), or NOT_FOUND."""
        try:
            response = await replica.roles.GetEffectiveRole(
                rpb.GetEffectiveRoleRequest(
                    organization=self.slug,
                    user=rpb.UserSelector(user_id=user),
                    consistency=consistency,
                ),
                metadata=SERVICE,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return "NOT_FOUND", -1
        return str(response.role), response.sequence

    async def check(self, deleted: list[str]) -> None:
        for user in [u for u in self.users if u is not None] + deleted:
            exact, sequence = await self.answer(self.pair[0], user, EXACT)
            assert (await self.answer(self.pair[1], user, EXACT))[0] == exact
            for replica in self.pair:
                if sequence >= 0:
                    fresh = rpb.Consistency(at_least_as_fresh=sequence)
                    answer, at = await self.answer(replica, user, fresh)
                    assert answer == exact and at >= sequence, (user, answer, exact)
                async with asyncio.timeout(CONVERGE_SECONDS):
                    while (await self.answer(replica, user, LATENCY))[0] != exact:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)


class _tolerate:
    """Ignore one expected gRPC status (e.g. clearing a mapping that is not there)."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == self.code


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(st.tuples(STEPS, st.integers(0, 1)), min_size=1, max_size=10),
)
async def test_every_mode_is_exact_or_converges(
    pair: list[Replica], steps: list[tuple[tuple[str, Any, Any], int]]
) -> None:
    slug = f"c{next(_slugs)}-{random.randrange(10**6)}"
    _, secret = await new_org_with_token(pair[0].admin, slug)
    world = World(pair, slug, secret)
    await world.setup()
    for replica in pair:
        replica.core.notifier.deaf = False
    try:
        for user in world.users:  # held by both caches before the writes
            for replica in pair:
                await world.answer(replica, user or "", LATENCY)
        deleted: list[str] = []
        for step, via in steps:
            note(f"{step} via replica {via}")
            before = list(world.users)
            await world.apply(step, via)
            deleted += [u for u, now in zip(before, world.users, strict=True) if u and not now]
            await world.check(deleted)
    finally:
        for replica in pair:
            replica.core.notifier.deaf = False


async def test_the_stream_is_gap_free_and_in_commit_order_under_concurrent_writers(
    pair: list[Replica],
) -> None:
    a, b = pair
    _, secret = await new_org_with_token(a.admin, "acme")
    scims = [Scim(r.channel, secret) for r in pair]
    users = [(await scims[i % 2].create_user(okta_user(f"c{i}@x.example")))["id"] for i in range(8)]
    group = await scims[0].create_group({"displayName": "Admins"})
    await a.admin.SetGroupRole(
        apb.SetGroupRoleRequest(organization="acme", group="Admins", role=R.ROLE_ADMIN),
        metadata=ADMIN,
    )
    start = (
        await b.roles.ListUsersByRole(
            rpb.ListUsersByRoleRequest(organization="acme", role=R.ROLE_MEMBER), metadata=SERVICE
        )
    ).sequence
    received: list[int] = []
    last_role: dict[str, int] = {}
    done = asyncio.Event()
    final: list[int] = []

    async def watch() -> None:
        call = b.roles.WatchRoleChanges(
            rpb.WatchRoleChangesRequest(organization="acme", after_sequence=start),
            metadata=SERVICE,
        )
        async for response in call:
            if response.HasField("change"):
                received.append(response.change.sequence)
                last_role[response.change.user_id] = response.change.new_role
            elif done.is_set() and response.checkpoint_sequence == final[0]:
                break
        call.cancel()

    async def writer(i: int) -> None:
        scim = scims[i % 2]
        user = users[i]
        for n in range(6):
            if n % 2 == 0:
                op = {"op": "add", "path": "members", "value": [{"value": user}]}
            else:
                op = {"op": "remove", "path": f'members[value eq "{user}"]'}
            await scim.groups.PatchGroup(
                gpb.PatchGroupRequest(id=group["id"], operations=ops(op)), metadata=scim.metadata
            )
            active = {"op": "replace", "path": "active", "value": n % 3 != 2}
            await scim.users.PatchUser(
                upb.PatchUserRequest(id=user, operations=ops(active)), metadata=scim.metadata
            )

    watcher = asyncio.create_task(watch())
    async with asyncio.timeout(120):
        await asyncio.gather(*(writer(i) for i in range(len(users))))
        final.append(
            (
                await a.roles.ListUsersByRole(
                    rpb.ListUsersByRoleRequest(organization="acme", role=R.ROLE_MEMBER),
                    metadata=SERVICE,
                )
            ).sequence
        )
        done.set()
        await watcher
    assert received == list(range(start + 1, final[0] + 1))  # every one, once, in order
    for user in users:
        exact = await b.roles.GetEffectiveRole(
            rpb.GetEffectiveRoleRequest(
                organization="acme", user=rpb.UserSelector(user_id=user), consistency=EXACT
            ),
            metadata=SERVICE,
        )
        assert last_role.get(user, R.ROLE_MEMBER) == exact.role.role, json.dumps(user)
