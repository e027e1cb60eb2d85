"""Group → role mappings and the default role: the writes Wando staff make,
their dry run, and the listing. Every write changes effective roles in its
own transaction, through roles.RoleTracker."""

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

SELECT_DEFAULT_ROLE = "SELECT default_role FROM organizations WHERE org_id = $1"

UPDATE_DEFAULT_ROLE = "UPDATE organizations SET default_role = $2 WHERE org_id = $1"

# active users in no mapped group: those whose role is the default
SELECT_DEFAULT_ROLE_USERS = """
SELECT u.user_id FROM users u
WHERE u.org_id = $1 AND u.active AND NOT EXISTS (
    SELECT 1 FROM group_members m
    JOIN group_roles r ON r.org_id = m.org_id AND r.group_id = m.group_id
    WHERE m.org_id = u.org_id AND m.user_id = u.user_id
)
"""


@dataclass(frozen=True)
class Mapping:
    group_id: uuid.UUID
    display_name: str
    role: str | None  # None: remove the group's mapping


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


async def apply(
    conn: Conn, org_id: uuid.UUID, mappings: list[Mapping], default_role: str | None
) -> tuple[roles.RoleTracker, str]:
    """Apply mapping (and default role) changes after starting a tracker over
    every user they can affect; the caller finishes or inspects the tracker."""
    affected: list[uuid.UUID] = []
    for mapping in mappings:
        affected += await roles.group_members(conn, org_id, mapping.group_id)
    if default_role is not None:
        affected += [r["user_id"] for r in await conn.fetch(SELECT_DEFAULT_ROLE_USERS, org_id)]
    tracker = await roles.RoleTracker.start(conn, org_id, affected)
    causes = []
    for mapping in mappings:
        if mapping.role is None:
            await conn.execute(DELETE_MAPPING, org_id, mapping.group_id)
            causes.append(f"mapping of {mapping.display_name} removed")
        else:
            await conn.execute(UPSERT_MAPPING, org_id, mapping.group_id, mapping.role)
            causes.append(f"{mapping.display_name} mapped to {mapping.role}")
    if default_role is not None:
        await conn.execute(UPDATE_DEFAULT_ROLE, org_id, default_role)
        causes.append(f"default role set to {default_role}")
    return tracker, "; ".join(causes)


async def set_mapping(
    conn: Conn, org_id: uuid.UUID, group_ref: str, role: str | None
) -> tuple[Mapping, int]:
    """Map (or with role None, unmap) a group; returns the mapping and how many
    users' roles changed."""
    group = await lock_group(conn, org_id, group_ref)
    mapping = Mapping(group["group_id"], group["display_name"], role)
    tracker, cause = await apply(conn, org_id, [mapping], None)
    changes = await tracker.finish(cause)
    action = "unmap" if role is None else "map"
    await audit.record_admin(conn, org_id, action, "GroupRole", group["group_id"], ["role"])
    return mapping, len(changes)


async def set_default(conn: Conn, org_id: uuid.UUID, role: str) -> int:
    tracker, cause = await apply(conn, org_id, [], role)
    changes = await tracker.finish(cause)
    await audit.record_admin(conn, org_id, "replace", "Organization", org_id, ["defaultRole"])
    return len(changes)


class _DryRun(Exception):
    def __init__(self, changes: list[roles.Change]) -> None:
        self.changes = changes


async def preview(
    conn: Conn, org_id: uuid.UUID, proposed: list[tuple[str, str | None]], default_role: str | None
) -> list[roles.Change]:
    """What the proposed changes would do: the very code path of the real
    change, inside a transaction that is rolled back."""
    try:
        async with conn.transaction():
            mappings = []
            for group_ref, role in proposed:
                group = await lock_group(conn, org_id, group_ref)
                mappings.append(Mapping(group["group_id"], group["display_name"], role))
            tracker, _ = await apply(conn, org_id, mappings, default_role)
            raise _DryRun(await tracker.changes())
    except _DryRun as dry:
        return dry.changes


async def list_mappings(conn: Conn, org_id: uuid.UUID) -> tuple[list[asyncpg.Record], str]:
    rows = await conn.fetch(SELECT_MAPPINGS, org_id)
    default: str = await conn.fetchval(SELECT_DEFAULT_ROLE, org_id)
    return rows, default
