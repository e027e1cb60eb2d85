"""Bulk data straight into the tables, for workloads that time something other
than its creation. SQL as named constants, values as $n parameters.

Users are `user<n>@bench.example` with externalId `ext-<n>`, created in order
of n (the order an import pages through them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.db import Conn

USERS = """
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

EMAILS = """
INSERT INTO user_emails (org_id, user_id, value_lower)
SELECT org_id, user_id, lower(user_name) FROM users WHERE org_id = $1
ON CONFLICT DO NOTHING
"""

USER_IDS = """
SELECT user_id::text AS id, user_name FROM users WHERE org_id = $1 ORDER BY created_at, user_id
"""

GROUPS = """
INSERT INTO groups (org_id, group_id, display_name, attributes)
SELECT $1, gen_random_uuid(), $2 || g, jsonb_build_object('displayName', $2 || g)
FROM generate_series(1, $3::int) AS g
RETURNING group_id::text
"""

# every user in 3 of the organisation's groups named by prefix $2, spread by hash
ROLE_MEMBERS = """
INSERT INTO group_members (org_id, group_id, user_id)
SELECT u.org_id, g.group_id, u.user_id
FROM users u
CROSS JOIN LATERAL (
    SELECT group_id FROM groups WHERE org_id = u.org_id AND display_name LIKE $2 || '%'
    ORDER BY md5(u.user_id::text || group_id::text) LIMIT 3
) g
WHERE u.org_id = $1
ON CONFLICT DO NOTHING
"""

MEMBERS = """
INSERT INTO group_members (org_id, group_id, user_id)
SELECT $1, $2::uuid, unnest($3::uuid[])
"""


VACUUM = "VACUUM (ANALYZE) users, user_emails"

# the kept totals (core.counts) after rows were written straight into the tables
UNCOUNT = "DELETE FROM resource_counts WHERE org_id = $1"
RECOUNT = """
INSERT INTO resource_counts (org_id, resource, slot, n)
VALUES ($1, 'users', 0, (SELECT count(*) FROM users WHERE org_id = $1)),
       ($1, 'groups', 0, (SELECT count(*) FROM groups WHERE org_id = $1))
"""


@dataclass(frozen=True)
class SeededUser:
    id: str
    user_name: str


async def users(conn: Conn, org_id: str, count: int) -> list[SeededUser]:
    """`count` users, user1 … user<count>, in creation order."""
    await conn.execute(USERS, org_id, 1, count)
    await conn.execute(EMAILS, org_id)
    await recount(conn, org_id)
    # what autovacuum does within a minute of a bulk load on a live system; without
    # it index-only scans still visit the heap and the planner has no statistics
    await conn.execute(VACUUM)
    rows = await conn.fetch(USER_IDS, org_id)
    return [SeededUser(r["id"], r["user_name"]) for r in rows]


async def groups(conn: Conn, org_id: str, prefix: str, count: int) -> list[str]:
    """`count` empty groups named `<prefix>1` … ; their ids."""
    ids = [r[0] for r in await conn.fetch(GROUPS, org_id, prefix, count)]
    await recount(conn, org_id)
    return ids


async def recount(conn: Conn, org_id: str) -> None:
    """Set the organisation's kept totals to what its tables hold."""
    async with conn.transaction():
        await conn.execute(UNCOUNT, org_id)
        await conn.execute(RECOUNT, org_id)


async def spread_members(conn: Conn, org_id: str, prefix: str) -> None:
    """Every user of the organisation into 3 of the groups named `<prefix>…`."""
    await conn.execute(ROLE_MEMBERS, org_id, prefix)


async def members(conn: Conn, org_id: str, group_id: str, ids: list[str]) -> None:
    await conn.execute(MEMBERS, org_id, group_id, ids)
