"""Property: the effective-role rule has one definition (migrations/0006), and
every reader agrees with it. Over random organisations (users active or not,
their `roles` values, groups mapped or not, memberships, value mappings, the
default role):

- ListUsersByRole(r), paged, lists exactly the users whom resolution
  (BatchGetEffectiveRoles, read from the database) gives r, for every r and
  for "no role";
- resolution gives each user the role a small model of the README's rule
  gives, with the grants that explain it;
- the users whose role is the default (what a default-role change affects)
  are the active users that no grant gives a role.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

import asyncpg
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from core import role_mappings
from tests.support import SERVICE
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import role_service_pb2_grpc, roles_pb2

ROLES = ["admin", "boss", "member"]
RANK = {"member": 1, "boss": 2, "admin": 3}
TO_PROTO = {
    None: roles_pb2.ROLE_UNSPECIFIED,
    "member": roles_pb2.ROLE_MEMBER,
    "boss": roles_pb2.ROLE_BOSS,
    "admin": roles_pb2.ROLE_ADMIN,
}
VALUES = ["a", "B", "c"]
_slugs = itertools.count()


@dataclass
class World:
    default_role: str
    active: list[bool]  # per user
    values: list[set[str]]  # per user
    group_roles: list[str | None]  # per group: the role it is mapped to
    members: list[set[int]]  # per group: user indexes
    value_roles: dict[str, str]

    def grants(self, user: int) -> list[str]:
        by_group = [
            role
            for role, members in zip(self.group_roles, self.members, strict=True)
            if role is not None and user in members
        ]
        return by_group + [self.value_roles[v] for v in self.values[user] if v in self.value_roles]

    def role(self, user: int) -> str | None:
        """The README's rule, written independently of the SQL."""
        if not self.active[user]:
            return None
        grants = self.grants(user)
        return max(grants, key=RANK.__getitem__) if grants else self.default_role


@st.composite
def worlds(draw: st.DrawFn) -> World:
    n_users = draw(st.integers(1, 10))
    n_groups = draw(st.integers(0, 4))
    user = st.integers(0, n_users - 1)
    return World(
        default_role=draw(st.sampled_from(ROLES)),
        active=draw(st.lists(st.booleans(), min_size=n_users, max_size=n_users)),
        values=draw(st.lists(st.sets(st.sampled_from(VALUES)), min_size=n_users, max_size=n_users)),
        group_roles=draw(
            st.lists(
                st.one_of(st.none(), st.sampled_from(ROLES)), min_size=n_groups, max_size=n_groups
            )
        ),
        members=draw(st.lists(st.sets(user), min_size=n_groups, max_size=n_groups)),
        value_roles=draw(st.dictionaries(st.sampled_from(VALUES), st.sampled_from(ROLES))),
    )


async def insert(pool: asyncpg.Pool, world: World) -> tuple[uuid.UUID, list[uuid.UUID]]:
    org_id = uuid.uuid4()
    users = [uuid.uuid4() for _ in world.active]
    groups = [uuid.uuid4() for _ in world.group_roles]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO organizations (org_id, slug, display_name, default_role)"
            " VALUES ($1, $2, 'p', $3)",
            org_id,
            f"roles-{next(_slugs)}-{org_id.hex[:8]}",
            world.default_role,
        )
        await conn.execute("INSERT INTO role_counters (org_id) VALUES ($1)", org_id)
        await conn.executemany(
            "INSERT INTO users (org_id, user_id, user_name, active, attributes)"
            " VALUES ($1, $2, $3, $4, '{}')",
            [(org_id, u, f"u{i}", world.active[i]) for i, u in enumerate(users)],
        )
        await conn.executemany(
            "INSERT INTO user_role_values (org_id, user_id, value) VALUES ($1, $2, $3)",
            [(org_id, users[i], v) for i, vs in enumerate(world.values) for v in vs],
        )
        await conn.executemany(
            "INSERT INTO groups (org_id, group_id, display_name, attributes)"
            " VALUES ($1, $2, $3, '{}')",
            [(org_id, g, f"g{i}") for i, g in enumerate(groups)],
        )
        await conn.executemany(
            "INSERT INTO group_roles (org_id, group_id, role) VALUES ($1, $2, $3)",
            [(org_id, g, r) for g, r in zip(groups, world.group_roles, strict=True) if r],
        )
        await conn.executemany(
            "INSERT INTO group_members (org_id, group_id, user_id) VALUES ($1, $2, $3)",
            [(org_id, groups[g], users[u]) for g, ms in enumerate(world.members) for u in ms],
        )
        await conn.executemany(
            "INSERT INTO role_value_mappings (org_id, value, role) VALUES ($1, $2, $3)",
            [(org_id, v, r) for v, r in world.value_roles.items()],
        )
    return org_id, users


async def listed(
    stub: role_service_pb2_grpc.RoleServiceStub, org_id: uuid.UUID, role: int
) -> set[str]:
    found: list[str] = []
    token = ""
    while True:
        page = await stub.ListUsersByRole(
            rpb.ListUsersByRoleRequest(
                organization=str(org_id), role=role, page_size=3, page_token=token
            ),
            metadata=SERVICE,
        )
        found += [u.user_id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert len(found) == len(set(found)), "a user listed twice"
    return set(found)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds())
async def test_listing_resolution_and_default_users_agree(
    pool: asyncpg.Pool, roles_stub: role_service_pb2_grpc.RoleServiceStub, world: World
) -> None:
    note(repr(world))
    org_id, users = await insert(pool, world)
    batch = await roles_stub.BatchGetEffectiveRoles(
        rpb.BatchGetEffectiveRolesRequest(
            organization=str(org_id),
            users=[rpb.UserSelector(user_id=str(u)) for u in users],
            consistency=rpb.Consistency(fully_consistent=True),
        ),
        metadata=SERVICE,
    )
    resolved = {e.role.user_id: e.role for e in batch.entries}
    for i, user in enumerate(users):
        answer = resolved[str(user)]
        expected = world.role(i)
        assert answer.role == TO_PROTO[expected], (i, expected, answer)
        explained = [g.role for g in answer.granted_by] + [v.role for v in answer.granted_by_values]
        if expected is not None and world.grants(i):
            assert explained and set(explained) == {TO_PROTO[expected]}, answer
        else:
            assert not explained, answer
    for role in TO_PROTO.values():
        by_resolution = {u for u, answer in resolved.items() if answer.role == role}
        assert await listed(roles_stub, org_id, role) == by_resolution, role
    async with pool.acquire() as conn:
        rows = await conn.fetch(role_mappings.SELECT_DEFAULT_ROLE_USERS, org_id)
    default_users = {users.index(r["user_id"]) for r in rows}
    assert default_users == {
        i for i in range(len(users)) if world.active[i] and not world.grants(i)
    }
