"""Structural claims, checked beside the timings (issue #3's, kept in CI):

- a full-list PUT of a large group that changes one member writes one
  membership row: rows a PUT inserted or rewrote carry a transaction id (xmin)
  newer than one taken just before it, so counting them needs no statistics
  collector (whose flushes lag by up to 10 s);
- `userName eq`, `externalId eq` and `emails.value eq` are index lookups
  (EXPLAIN at the main organisation's size).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg

from bench.context import OKTA_HEADERS
from bench.jobs import GROUP_URN
from core import filters
from core.schema import user_schema

XID_NOW = "SELECT pg_current_xact_id()::text::bigint % 4294967296"
MEMBERS_SINCE = """
SELECT count(*) FILTER (WHERE xmin::text::bigint >= $3) AS written, count(*) AS members
FROM group_members WHERE org_id = $1 AND group_id = $2
"""


async def _put_members(
    session: aiohttp.ClientSession, url: str, token: str, name: str, members: list[str]
) -> None:
    body = {"schemas": [GROUP_URN], "displayName": name, "members": [{"value": m} for m in members]}
    headers = {**OKTA_HEADERS, "Authorization": f"Bearer {token}"}
    async with session.put(url, json=body, headers=headers) as reply:
        text = await reply.text()
        if reply.status != 200:
            raise RuntimeError(f"PUT {url} -> {reply.status}: {text[:300]}")


async def one_change_writes(
    pool: asyncpg.Pool,
    scim_base: str,
    token: str,
    org_id: str,
    group_id: str,
    name: str,
    base: list[str],
    spare: str,
) -> dict[str, Any]:
    """PUT base + spare (one member joins), then base (it leaves); count the
    membership rows each PUT wrote."""
    url = f"{scim_base}/Groups/{group_id}"
    out: dict[str, Any] = {"members": len(base)}
    async with aiohttp.ClientSession() as session:
        for step, members in (("join", [*base, spare]), ("leave", base)):
            async with pool.acquire() as conn:
                before = await conn.fetchval(XID_NOW)
            await _put_members(session, url, token, name, members)
            async with pool.acquire() as conn:
                row = await conn.fetchrow(MEMBERS_SINCE, org_id, group_id, before)
            assert row is not None  # an aggregate always answers
            out[f"{step}_rows_written"] = row["written"]
            out[f"{step}_members_after"] = row["members"]
    # joining inserts one row; leaving deletes one and rewrites none
    out["met"] = (
        out["join_rows_written"] == 1
        and out["join_members_after"] == len(base) + 1
        and out["leave_rows_written"] == 0
        and out["leave_members_after"] == len(base)
    )
    return out


LOOKUP = "SELECT r.* FROM users r WHERE r.org_id = $1 AND"
PLANS = (
    ("userName eq", 'userName eq "USER{n}@bench.example"'),
    ("externalId eq", 'externalId eq "ext-{n}"'),
    ("emails.value eq", 'emails.value eq "user{n}@bench.example"'),
)


async def plans(pool: asyncpg.Pool, org_id: str, n: int) -> dict[str, str]:
    """EXPLAIN ANALYZE of each user lookup, compiled by the core's own filter code."""
    out = {}
    for name, template in PLANS:
        params = filters.Params(org_id)
        where = filters.compile_filter(user_schema(), template.format(n=n), params)
        sql = f"EXPLAIN (ANALYZE, BUFFERS) {LOOKUP} ({where})"
        async with pool.acquire() as conn:
            out[name] = "\n".join(r[0] for r in await conn.fetch(sql, *params.values))
    return out
