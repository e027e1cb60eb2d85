"""Group → role and role value → role mappings, and the default role: the
writes Wando staff make, their dry run, and the listing. Every write changes
effective roles in its own transaction, through roles.RoleTracker."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from core import audit, roles
from core.errors import InvalidArgument, NotFound
from core.organizations import parse_uuid

if TYPE_CHECKING:
    from core.db import Conn

SELECT_GROUP_FOR_UPDATE = """
SELECT group_id, display_name FROM groups
WHERE org_id = $1 AND (group_id = $2 OR lower(display_name) = lower($3))
ORDER BY group_id = $2 DESC NULLS LAST
LIMIT 1
FOR UPDATE
"""

UPSERT_MAPPING = """
INSERT INTO group_roles (org_id, group_id, role) VALUES ($1, $2, $3)
ON CONFLICT (org_id, group_id) DO UPDATE SET role = excluded.role
"""

DELETE_MAPPING = "DELETE FROM group_roles WHERE org_id = $1 AND group_id = $2"

SELECT_MAPPINGS = """
SELECT r.group_id, g.display_name, r.role
FROM group_roles r
JOIN groups g ON g.org_id = r.org_id AND g.group_id = r.group_id
WHERE r.org_id = $1
ORDER BY lower(g.display_name), r.group_id
"""

UPSERT_VALUE_MAPPING = """
INSERT INTO role_value_mappings (org_id, value, role) VALUES ($1, $2, $3)
ON CONFLICT (org_id, value) DO UPDATE SET role = excluded.role
"""

DELETE_VALUE_MAPPING = "DELETE FROM role_value_mappings WHERE org_id = $1 AND value = $2"

SELECT_VALUE_MAPPING = "SELECT role FROM role_value_mappings WHERE org_id = $1 AND value = $2"

# mapped values and values users carry, with how many carry each
SELECT_ROLE_VALUES = """
SELECT coalesce(m.value, c.value) AS value, m.role, coalesce(c.users, 0) AS users
FROM (SELECT value, role FROM role_value_mappings WHERE org_id = $1) AS m
FULL JOIN (
    SELECT value, count(*) AS users FROM user_role_values WHERE org_id = $1 GROUP BY value
) AS c ON c.value = m.value
ORDER BY 1
LIMIT $2
"""

COUNT_VALUE_HOLDERS = "SELECT count(*) FROM user_role_values WHERE org_id = $1 AND value = $2"

SELECT_DEFAULT_ROLE = "SELECT default_role FROM organizations WHERE org_id = $1"

# every change of role mappings or the default role: a new version of the
# organisation's role configuration, its row held until commit (see
# migrations/0005_roles_version.sql)
LOCK_ROLE_CONFIGURATION = """
UPDATE organizations SET roles_version = roles_version + 1 WHERE org_id = $1
"""

UPDATE_DEFAULT_ROLE = "UPDATE organizations SET default_role = $2 WHERE org_id = $1"

# active users whom no grant gives a role: those whose role is the default
SELECT_DEFAULT_ROLE_USERS = """
SELECT u.user_id FROM effective_roles u
WHERE u.org_id = $1 AND u.active AND u.granted IS NULL
"""

MAX_ROLE_VALUE_LENGTH = 4096  # documents.MAX_STRING_LENGTH: no longer value can be sent
MAX_LISTED_ROLE_VALUES = 1000


@dataclass(frozen=True)
class Mapping:
    """One mapping change: of a group (group_id set) or of a role value."""

    role: str | None  # None: remove the mapping
    group_id: uuid.UUID | None = None
    display_name: str = ""
    value: str = ""

    @property
    def label(self) -> str:
        return self.display_name if self.group_id else f"role value {self.value!r}"


# what a proposed mapping is of: ("group", id or displayName) or ("role_value", value)
Target = tuple[str, str]


def role_name(role: str | None, field: str) -> str:
    if role not in roles.RANK:
        raise InvalidArgument(f"{field} must be one of admin, boss, member", field=field)
    return role


async def lock_group(conn: Conn, org_id: uuid.UUID, ref: str) -> asyncpg.Record:
    """The group named by id or displayName (without regard to case), locked."""
    if not ref.strip():
        raise InvalidArgument("group (id or displayName) is required", field="group")
    row = await conn.fetchrow(SELECT_GROUP_FOR_UPDATE, org_id, parse_uuid(ref), ref)
    if row is None:
        raise NotFound(f"no group {ref!r} in this organisation", field="group")
    return row


def role_value(value: str, field: str = "value") -> str:
    if not value:
        raise InvalidArgument(
            f"{field} (a value of the SCIM roles attribute) is required", field=field
        )
    if len(value) > MAX_ROLE_VALUE_LENGTH:
        raise InvalidArgument(
            f"{field} is longer than {MAX_ROLE_VALUE_LENGTH} characters", field=field
        )
    return value


async def target(conn: Conn, org_id: uuid.UUID, proposed: Target, role: str | None) -> Mapping:
    """The mapping change a (kind, reference) pair names; a group is locked."""
    kind, ref = proposed
    if kind == "role_value":
        return Mapping(role, value=role_value(ref, "role_value"))
    group = await lock_group(conn, org_id, ref)
    return Mapping(role, group["group_id"], group["display_name"])


async def apply(
    conn: Conn, org_id: uuid.UUID, mappings: list[Mapping], default_role: str | None
) -> tuple[roles.RoleTracker, str]:
    """Apply mapping (and default role) changes after starting a tracker over
    every user they can affect; the caller finishes or inspects the tracker.

    The organisation's row comes first (a new role configuration version:
    users being created check it, see core.roles), then the role counter,
    and only then are the affected users read, so that no role-affecting
    write commits unseen in between."""
    await conn.execute(LOCK_ROLE_CONFIGURATION, org_id)
    await roles.lock_counter(conn, org_id)
    affected: list[uuid.UUID] = []
    for mapping in mappings:
        if mapping.group_id is None:
            affected += await roles.value_holders(conn, org_id, mapping.value)
        else:
            affected += await roles.group_members(conn, org_id, mapping.group_id)
    if default_role is not None:
        affected += [r["user_id"] for r in await conn.fetch(SELECT_DEFAULT_ROLE_USERS, org_id)]
    tracker = await roles.RoleTracker.locked(conn, org_id, affected)
    causes = []
    for mapping in mappings:
        key = mapping.group_id or mapping.value
        if mapping.role is None:
            sql = DELETE_MAPPING if mapping.group_id else DELETE_VALUE_MAPPING
            await conn.execute(sql, org_id, key)
            causes.append(f"mapping of {mapping.label} removed")
        else:
            sql = UPSERT_MAPPING if mapping.group_id else UPSERT_VALUE_MAPPING
            await conn.execute(sql, org_id, key, mapping.role)
            causes.append(f"{mapping.label} mapped to {mapping.role}")
    if default_role is not None:
        await conn.execute(UPDATE_DEFAULT_ROLE, org_id, default_role)
        causes.append(f"default role set to {default_role}")
    return tracker, "; ".join(causes)


async def set_mapping(
    conn: Conn, org_id: uuid.UUID, group_ref: str, role: str | None
) -> tuple[Mapping, int]:
    """Map (or with role None, unmap) a group; returns the mapping and how many
    users' roles changed."""
    mapping = await target(conn, org_id, ("group", group_ref), role)
    tracker, cause = await apply(conn, org_id, [mapping], None)
    changes = await tracker.finish(cause)
    action = "unmap" if role is None else "map"
    await audit.record_admin(conn, org_id, action, "GroupRole", str(mapping.group_id), ["role"])
    return mapping, len(changes)


async def set_value_mapping(
    conn: Conn, org_id: uuid.UUID, value: str, role: str | None
) -> tuple[int, int]:
    """Map (or with role None, unmap) a role value; returns how many users
    carry it and how many users' roles changed."""
    value = role_value(value)
    if role is None and await conn.fetchval(SELECT_VALUE_MAPPING, org_id, value) is None:
        raise NotFound(f"role value {value!r} is not mapped in this organisation", field="value")
    tracker, cause = await apply(conn, org_id, [Mapping(role, value=value)], None)
    changes = await tracker.finish(cause)
    action = "unmap" if role is None else "map"
    await audit.record_admin(conn, org_id, action, "RoleValueMapping", value, ["role"])
    holders: int = await conn.fetchval(COUNT_VALUE_HOLDERS, org_id, value)
    return holders, len(changes)


async def set_default(conn: Conn, org_id: uuid.UUID, role: str) -> int:
    tracker, cause = await apply(conn, org_id, [], role)
    changes = await tracker.finish(cause)
    await audit.record_admin(conn, org_id, "replace", "Organization", org_id, ["defaultRole"])
    return len(changes)


class _DryRun(Exception):
    def __init__(self, changes: list[roles.Change]) -> None:
        self.changes = changes


async def preview(
    conn: Conn,
    org_id: uuid.UUID,
    proposed: list[tuple[Target, str | None]],
    default_role: str | None,
) -> list[roles.Change]:
    """What the proposed changes would do: the very code path of the real
    change, inside a transaction that is rolled back."""
    try:
        async with conn.transaction():
            mappings = [await target(conn, org_id, ref, role) for ref, role in proposed]
            tracker, _ = await apply(conn, org_id, mappings, default_role)
            raise _DryRun(await tracker.changes())
    except _DryRun as dry:
        return dry.changes


@dataclass(frozen=True)
class Listing:
    groups: list[asyncpg.Record]  # group_id, display_name, role
    default_role: str
    role_values: list[asyncpg.Record]  # value, role (None: unmapped), users


async def list_mappings(conn: Conn, org_id: uuid.UUID) -> Listing:
    groups = await conn.fetch(SELECT_MAPPINGS, org_id)
    default: str = await conn.fetchval(SELECT_DEFAULT_ROLE, org_id)
    values = await conn.fetch(SELECT_ROLE_VALUES, org_id, MAX_LISTED_ROLE_VALUES)
    return Listing(groups, default, values)
