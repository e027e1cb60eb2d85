"""Effective roles: resolution, and the change stream's outbox.

effective role = the highest of admin > boss > member among the mapped groups
a user belongs to and the mapped values of their SCIM `roles` attribute, else
the organisation's default role; a deactivated user has none. The rule is
defined once, in SQL (migrations/0006_effective_roles.sql: effective_role(),
top_role(), the views user_grants and effective_roles), and read from there.
Every write that can change a role (or what RoleService answers about it:
why, the userName) does, in its own transaction:

    tracker = await RoleTracker.start(conn, org_id, user_ids)   # before
    ... the write ...
    await tracker.finish("cause")                              # after → outbox

start() locks the organisation's role_counters row first, so role-affecting
writes of one organisation are serialised: each sees the others' results, the
before/after it computes are exact, and role_changes.seq is gapless and in
commit order.

A new user is the exception: nobody else can see it before its transaction
commits, and it is in no group yet, so its role depends only on its own role
values, the value mappings and the default role. Its creation is one
statement (users.INSERT_USERS) that resolves that role and records it, with
a check that no change of the role configuration committed meanwhile
(role_mappings.apply increments organizations.roles_version and holds the
row; see migrations/0005_roles_version.sql). The counter is then held only
while that statement commits.

Lock order is always resource row(s) first, then the organisation's row (the
role configuration), then its count slots (core.counts), the role counter last.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg

from wando.provisioning.v1 import roles_pb2

if TYPE_CHECKING:
    from core.db import Conn

# the role names, in their order (as role_rank() in SQL): to check names given
RANK = {"member": 1, "boss": 2, "admin": 3}


TO_PROTO = {
    None: roles_pb2.ROLE_UNSPECIFIED,
    "member": roles_pb2.ROLE_MEMBER,
    "boss": roles_pb2.ROLE_BOSS,
    "admin": roles_pb2.ROLE_ADMIN,
}
FROM_PROTO = {v: k for k, v in TO_PROTO.items()}
NOTIFY_CHANNEL = "wando_role_changes"

# the last change-stream sequence the current RPC's write produced (0: none),
# for its answer (role_sequence): set where the outbox is written, read by
# the servicer; each gRPC call runs in its own task, so its own context
SEQUENCE_PRODUCED: ContextVar[int] = ContextVar("role_sequence_produced", default=0)
# and the organisation whose outbox it advanced, for the doorbell the RPC
# rings once it has committed (core.instrumentation, core.doorbell)
OUTBOX_ADVANCED: ContextVar[uuid.UUID | None] = ContextVar("role_outbox_advanced", default=None)


def produced_by_this_call(org_id: uuid.UUID, sequence: int) -> None:
    """Say that the current RPC's write put changes up to `sequence` in
    `org_id`'s outbox (set before commit; read after it)."""
    SEQUENCE_PRODUCED.set(sequence)
    OUTBOX_ADVANCED.set(org_id)


# users with their effective role (migrations/0006_effective_roles.sql: the
# rule's one definition) and their grants (mapped groups, mapped role values;
# one row each), for the fold below to say which grants explain the role;
# {where} selects users by columns of the view `u`
RESOLVE_SQL = """
SELECT u.user_id, u.user_name, u.external_id, u.active, u.granted, u.role AS effective,
       mg.group_id, mg.display_name, mg.role_value, mg.role,
       (SELECT c.last_seq FROM role_counters c WHERE c.org_id = $1) AS seq
FROM effective_roles u
LEFT JOIN LATERAL (  -- OFFSET 0: kept a lateral subquery, read by index per user
    SELECT g.* FROM user_grants g WHERE g.org_id = u.org_id AND g.user_id = u.user_id OFFSET 0
) AS mg ON true
WHERE u.org_id = $1 AND {where}
"""

LOCK_COUNTER = "SELECT last_seq FROM role_counters WHERE org_id = $1 FOR UPDATE"

# the changes, numbered on from the counter, in one round trip: the counter's
# lock is held until commit; the last sequence comes back (watchers are woken
# after commit: core.doorbell)
RECORD_CHANGES = """
WITH advanced AS (
    UPDATE role_counters SET last_seq = last_seq + cardinality($2::uuid[])
    WHERE org_id = $1
    RETURNING last_seq - cardinality($2::uuid[]) AS before, last_seq
), recorded AS (
    INSERT INTO role_changes (org_id, seq, user_id, old_role, new_role, cause)
    SELECT $1, a.before + c.n, c.user_id, c.old_role, c.new_role, $5
    FROM advanced a, unnest($2::uuid[], $3::text[], $4::text[])
        WITH ORDINALITY AS c(user_id, old_role, new_role, n)
)
SELECT a.last_seq FROM advanced a
"""

RECORD_ORGANIZATION_CHANGE = """
WITH advanced AS (
    UPDATE role_counters SET last_seq = last_seq + 1 WHERE org_id = $1 RETURNING last_seq
), recorded AS (
    INSERT INTO role_changes (org_id, seq, user_id, old_role, new_role, cause)
    SELECT $1, a.last_seq, NULL, NULL, NULL, $2 FROM advanced a
)
SELECT a.last_seq FROM advanced a
"""

SELECT_GROUP_MEMBERS = "SELECT user_id FROM group_members WHERE org_id = $1 AND group_id = $2"

SELECT_VALUE_HOLDERS = "SELECT user_id FROM user_role_values WHERE org_id = $1 AND value = $2"


@dataclass(frozen=True)
class Grant:
    group_id: uuid.UUID
    display_name: str
    role: str


@dataclass(frozen=True)
class ValueGrant:
    value: str  # a `roles[].value` of the user's
    role: str


@dataclass(frozen=True)
class Resolved:
    user_id: uuid.UUID
    user_name: str
    active: bool
    role: str | None  # None: no role (deactivated)
    source: int  # roles_pb2.RoleSource
    granted_by: list[Grant] = field(default_factory=list)
    granted_by_values: list[ValueGrant] = field(default_factory=list)

    def to_proto(self) -> roles_pb2.EffectiveRole:
        return roles_pb2.EffectiveRole(
            user_id=str(self.user_id),
            user_name=self.user_name,
            role=TO_PROTO[self.role],
            source=self.source,  # type: ignore[arg-type]
            active=self.active,
            granted_by=[
                roles_pb2.GrantingGroup(
                    group_id=str(g.group_id), display_name=g.display_name, role=TO_PROTO[g.role]
                )
                for g in self.granted_by
            ],
            granted_by_values=[
                roles_pb2.GrantingRoleValue(value=v.value, role=TO_PROTO[v.role])
                for v in self.granted_by_values
            ],
        )


def resolve_rows(rows: Iterable[asyncpg.Record]) -> dict[uuid.UUID, Resolved]:
    """Fold RESOLVE_SQL rows (one per user and grant) into effective roles.
    The role is the database's (effective_roles); this only says why: the
    grants with that role explain it, and the source is GROUP when a group
    is among them, else ROLES_ATTRIBUTE; DEFAULT when no grant counts."""
    groups: dict[uuid.UUID, list[Grant]] = {}
    values: dict[uuid.UUID, list[ValueGrant]] = {}
    first: dict[uuid.UUID, asyncpg.Record] = {}
    for row in rows:
        user_id = row["user_id"]
        first.setdefault(user_id, row)
        by_group, by_value = groups.setdefault(user_id, []), values.setdefault(user_id, [])
        if row["role"] is None or row["role"] != row["granted"]:
            continue
        if row["role_value"] is not None:
            by_value.append(ValueGrant(row["role_value"], row["role"]))
        else:
            by_group.append(Grant(row["group_id"], row["display_name"], row["role"]))
    resolved = {}
    for user_id, row in first.items():
        winners = sorted(groups[user_id], key=lambda g: g.display_name)
        by_values = sorted(values[user_id], key=lambda v: v.value)
        role: str | None = row["effective"]
        if not row["active"]:
            source, winners, by_values = roles_pb2.ROLE_SOURCE_DEACTIVATED, [], []
        elif winners:
            source = roles_pb2.ROLE_SOURCE_GROUP
        elif by_values:
            source = roles_pb2.ROLE_SOURCE_ROLES_ATTRIBUTE
        else:
            source = roles_pb2.ROLE_SOURCE_DEFAULT
        resolved[user_id] = Resolved(
            user_id, row["user_name"], row["active"], role, source, winners, by_values
        )
    return resolved


async def resolve(
    conn: Conn, org_id: uuid.UUID, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Resolved]:
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return {}
    rows = await conn.fetch(RESOLVE_SQL.format(where="u.user_id = ANY($2::uuid[])"), org_id, ids)
    return resolve_rows(rows)


@dataclass
class Change:
    user_id: uuid.UUID
    user_name: str
    old_role: str | None
    new_role: str | None

    @property
    def of_role(self) -> bool:
        """Whether the role itself changed (else only what explains it, or
        the user's name, or a user without a role was deleted)."""
        return self.old_role != self.new_role


class RoleTracker:
    """Before/after effective roles around one write; see the module docstring.

    The outbox gets a row for every user whose answer (GetEffectiveRole's:
    role, why, name, active, existence) changed, so that a cache of answers
    that follows the outbox stays exact; callers that count or preview role
    changes get those whose role changed (Change.of_role)."""

    def __init__(self, conn: Conn, org_id: uuid.UUID, before: dict[uuid.UUID, Resolved]) -> None:
        self._conn = conn
        self._org_id = org_id
        self._before = before

    @classmethod
    async def start(
        cls, conn: Conn, org_id: uuid.UUID, user_ids: Iterable[uuid.UUID]
    ) -> RoleTracker:
        await lock_counter(conn, org_id)
        return await cls.locked(conn, org_id, user_ids)

    @classmethod
    async def locked(
        cls, conn: Conn, org_id: uuid.UUID, user_ids: Iterable[uuid.UUID]
    ) -> RoleTracker:
        """start() for a caller that already holds the counter (lock_counter)."""
        return cls(conn, org_id, await resolve(conn, org_id, user_ids))

    async def _answers_changed(self) -> list[Change]:
        ids = list(self._before)
        after = await resolve(self._conn, self._org_id, ids)
        out = []
        for user_id in ids:
            old, new = self._before.get(user_id), after.get(user_id)
            if old == new:
                continue
            name = (new or old).user_name  # type: ignore[union-attr]
            out.append(Change(user_id, name, old.role if old else None, new.role if new else None))
        return out

    async def changes(self) -> list[Change]:
        """The role changes so far, of the users tracked."""
        return [c for c in await self._answers_changed() if c.of_role]

    async def finish(self, cause: str) -> list[Change]:
        """Write every changed answer to the outbox (and wake watchers on
        commit); returns the role changes."""
        found = await self._answers_changed()
        if found:
            produced = await self._conn.fetchval(
                RECORD_CHANGES,
                self._org_id,
                [c.user_id for c in found],
                [c.old_role for c in found],
                [c.new_role for c in found],
                cause,
            )
            produced_by_this_call(self._org_id, produced)
        return [c for c in found if c.of_role]


async def record_organization_change(conn: Conn, org_id: uuid.UUID, cause: str) -> None:
    """One outbox row (user_id NULL) saying that any user's answer may have
    changed, e.g. when a mapped group is renamed: cheaper than a row per
    member, and a cache drops the organisation's entries. Takes the counter."""
    await lock_counter(conn, org_id)
    produced_by_this_call(org_id, await conn.fetchval(RECORD_ORGANIZATION_CHANGE, org_id, cause))


async def lock_counter(conn: Conn, org_id: uuid.UUID) -> None:
    """Take the organisation's role counter, until commit."""
    await conn.fetchval(LOCK_COUNTER, org_id)


async def group_members(conn: Conn, org_id: uuid.UUID, group_id: uuid.UUID) -> list[uuid.UUID]:
    return [r["user_id"] for r in await conn.fetch(SELECT_GROUP_MEMBERS, org_id, group_id)]


async def value_holders(conn: Conn, org_id: uuid.UUID, value: str) -> list[uuid.UUID]:
    """The users whose `roles` attribute carries `value`."""
    return [r["user_id"] for r in await conn.fetch(SELECT_VALUE_HOLDERS, org_id, value)]
