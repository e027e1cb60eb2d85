"""The last page of a long cursor walk reads what its first page reads: the
listing's own statement, EXPLAINed on PostgreSQL, seeks with the
(org_id, created_at, user_id) index and reads one page of it (plus one row),
where index paging walks the whole offset. Rows, not time, are compared."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from core import listing, users
from core.cursors import Cursors
from core.server import CoreServer
from tests.support import new_org_with_token
from wando.provisioning.v1 import admin_service_pb2_grpc, scim_pb2

USERS = 20_000
PAGE = 500

SEED = """
INSERT INTO users (org_id, user_id, user_name, attributes)
SELECT $1, gen_random_uuid(), 'user' || g || '@plan.example',
       jsonb_build_object('userName', 'user' || g || '@plan.example')
FROM generate_series(1, $2::int) AS g
"""


class Explaining:
    """A connection that EXPLAINs (ANALYZE) every statement it runs for the listing."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.plans: list[dict[str, Any]] = []

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        explained = await self.conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
        if isinstance(explained, str):  # the pool's json codec may have parsed it
            explained = json.loads(explained)
        self.plans.append(explained[0]["Plan"])
        result: list[asyncpg.Record] = await self.conn.fetch(sql, *args)
        return result


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


def users_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in nodes(plan) if n.get("Relation Name") == "users"]


async def test_the_last_page_of_a_cursor_walk_seeks_the_index(
    core: CoreServer,
    pool: asyncpg.Pool,
    admin_stub: admin_service_pb2_grpc.AdminServiceStub,
) -> None:
    org, _ = await new_org_with_token(admin_stub, "planners")
    other, _ = await new_org_with_token(admin_stub, "neighbours")
    org_id = uuid.UUID(org)
    async with pool.acquire() as conn:
        await conn.execute(SEED, org_id, USERS)
        await conn.execute(SEED, uuid.UUID(other), 2_000)
        await conn.execute("ANALYZE users")
        cursors = Cursors("plan-test-key")
        query = scim_pb2.ListQuery(count=PAGE, cursor="")
        seen = 0
        while True:
            explaining = Explaining(conn)
            page = await listing.list_page(explaining, users.TABLE, org_id, query, cursors)
            seen += len(page.rows)
            if not page.next_cursor:
                break
            query = scim_pb2.ListQuery(count=PAGE, cursor=page.next_cursor)
        assert seen == USERS
        last = explaining.plans[-1]
        scans = users_scans(last)
        # no sequential scan: the page's ids come from the index, in order,
        # starting at the cursor's position and stopping after PAGE + 1 rows
        assert all(n["Node Type"] != "Seq Scan" for n in scans), json.dumps(last, indent=1)
        (seek,) = [n for n in scans if n.get("Index Name") == "users_org_created_idx"]
        assert "created_at" in seek["Index Cond"] and ">" in seek["Index Cond"]
        assert seek["Actual Rows"] <= PAGE + 1
        assert not any(
            n["Node Type"] == "Sort" and n["Actual Rows"] > PAGE + 1 for n in nodes(last)
        )

        # what this test tells apart: index paging's last page walks the offset
        explaining = Explaining(conn)
        index_query = scim_pb2.ListQuery(count=PAGE, start_index=USERS - PAGE + 1)
        await listing.list_page(explaining, users.TABLE, org_id, index_query)
        walked = sum(n["Actual Rows"] for n in users_scans(explaining.plans[-1]))
        assert walked >= USERS - PAGE
