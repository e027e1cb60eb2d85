"""Every row an organisation owns, to compare before and after a drill.

Every table leads its key with org_id (README), so "what an organisation owns"
is every row of every table with an org_id column. The tables are found in the
catalogue, so a table added later is covered without touching this file.
Columns that change on their own (a token's last use, recorded at most once a
minute by whoever uses it) are left out.
"""

from __future__ import annotations

import json
import uuid

import asyncpg

TABLES = """
SELECT table_name FROM information_schema.columns
WHERE table_schema = 'public' AND column_name = 'org_id'
ORDER BY table_name
"""
VOLATILE = {"scim_tokens": {"last_used_at"}}
# a record of requests, not data the requests change: every request adds to it
NOT_OWNED_DATA = {"activity", "activity_chunks", "activity_counts"}


async def org_rows(pool: asyncpg.Pool, org_id: str | uuid.UUID) -> dict[str, list[str]]:
    """Table name → the organisation's rows as JSON text, sorted."""
    out: dict[str, list[str]] = {}
    async with pool.acquire() as conn:
        for record in await conn.fetch(TABLES):
            table = record["table_name"]
            if table in NOT_OWNED_DATA:
                continue
            rows = await conn.fetch(
                f'SELECT row_to_json(t)::text AS j FROM "{table}" t WHERE org_id = $1',
                uuid.UUID(str(org_id)),
            )
            skip = VOLATILE.get(table, set())
            out[table] = sorted(
                json.dumps({k: v for k, v in json.loads(row["j"]).items() if k not in skip})
                for row in rows
            )
    return out
