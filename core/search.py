"""Searching users and groups together (SCIM's POST /.search at the server
root, RFC 7644 §3.4.3): SQL, and the SearchService servicer.

The filter is compiled once per type (core.filters.compile_filter_across): an
attribute one type does not have is absent on its resources, one that neither
has is an error. The matches of both types are one UNION ALL, in creation
order (then id) across both types, or by the sort key (NULL, so last, for a
type without the attribute), then creation order. The total and the page's
ids come from one statement (one snapshot); then the page's rows, in the same
read-only transaction, rendered as ListUsers and ListGroups render them.

Cost: without a filter or sortBy, a page is a merge of two index walks (HITS)
and the total the kept counts, so it costs what the same page of one type
does; with a filter, the matches are counted and sorted, O(matches) as for a
filtered listing of one type; with sortBy, all the organisation's users and
groups (or the matches) are sorted, as no index holds the order of the union.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import asyncpg

from core import counts, filters, listing
from core.auth import Guard
from core.groups import TABLE as GROUPS
from core.groups import member_counts, members_of
from core.representation import group_proto, user_proto
from core.rpc import Ctx
from core.users import GROUPS_COLUMNS, GROUPS_JOIN, group_refs
from core.users import TABLE as USERS
from wando.provisioning.v1 import scim_pb2, search_service_pb2_grpc
from wando.provisioning.v1 import search_service_pb2 as pb

if TYPE_CHECKING:
    from core.db import Conn

# The matches of both types, as (kind, org_id, id, created_at[, sort_key]),
# the organisation named once, outside. Without a filter and a sort key,
# PostgreSQL pushes it into both branches and reads the page as a merge of the
# two (org_id, created_at, id) indexes, as cheap as the same page of one type:
# that needs the order to start with org_id, the branches to have no WHERE of
# their own (even `WHERE TRUE` makes it sort every row), and their columns the
# same types. With a filter, the matches are sorted, as they are counted.
HITS = """
SELECT * FROM (
    SELECT 'User'::text AS kind, r.org_id, r.user_id AS id, r.created_at{user_key}
    FROM users r {user_where}
    UNION ALL
    SELECT 'Group'::text, r.org_id, r.group_id, r.created_at{group_key}
    FROM groups r {group_where}
) AS hits
WHERE hits.org_id = $1
"""

# the total for a filter: counted, per type
COUNT_SQL = """
SELECT (SELECT count(*) FROM users r WHERE r.org_id = $1 AND ({user_filter}))
     + (SELECT count(*) FROM groups r WHERE r.org_id = $1 AND ({group_filter})) AS n
"""

# the total and the page's (kind, id)s, in one statement and one snapshot; a
# page without hits is one row of NULLs beside the total
PAGE_SQL = """
WITH total AS (
    {total}
), page AS (
    {hits}
    ORDER BY {order}
    LIMIT {limit} OFFSET {offset}
)
SELECT total.n AS total_results, page.kind, page.id
FROM total LEFT JOIN page ON true
ORDER BY {order}
"""

SELECT_USERS = f"""
SELECT u.*{GROUPS_COLUMNS}
FROM users u
{GROUPS_JOIN.format(user="u")}
WHERE u.org_id = $1 AND u.user_id = ANY($2::uuid[])
"""

SELECT_GROUPS = "SELECT * FROM groups WHERE org_id = $1 AND group_id = ANY($2::uuid[])"

SCHEMAS = (USERS.schema, GROUPS.schema)


def page_statement(query: scim_pb2.ListQuery, params: filters.Params) -> tuple[str, int]:
    """The statement of a search's page (PAGE_SQL), and its start index."""
    start, count = listing.page_bounds(query)
    user_filter = group_filter = ""
    if query.filter.strip():
        user_filter, group_filter = filters.compile_filter_across(SCHEMAS, query.filter, params)
    direction = listing.sort_direction(query)
    user_key = group_key = ""
    # org_id (one value) first: see HITS
    order = f"org_id, created_at {direction}, id {direction}"
    if query.sort_by.strip():
        keys = filters.sort_expressions_across(SCHEMAS, query.sort_by.strip())
        user_key, group_key = (f", {key} AS sort_key" for key in keys)
        order = f"sort_key {direction} NULLS LAST, created_at, id"
    if query.filter.strip():
        total = COUNT_SQL.format(user_filter=user_filter, group_filter=group_filter)
    else:  # the kept totals of both types, not a count
        total = counts.TOTAL.format(f"ANY({params.add(['users', 'groups'])}::text[])")
    hits = HITS.format(
        user_key=user_key,
        user_where=f"WHERE ({user_filter})" if user_filter else "",
        group_key=group_key,
        group_where=f"WHERE ({group_filter})" if group_filter else "",
    )
    sql = PAGE_SQL.format(total=total, hits=hits, order=order, limit=count, offset=start - 1)
    return sql, start


async def search(
    conn: Conn, org_id: uuid.UUID, query: scim_pb2.ListQuery, exclude_members: bool
) -> pb.SearchResourcesResponse:
    """One page of a search; `conn` in a read-only repeatable-read transaction."""
    params = filters.Params(org_id)
    sql, start = page_statement(query, params)
    found = await conn.fetch(sql, *params.values)
    hits = [(r["kind"], r["id"]) for r in found if r["id"] is not None]
    user_ids = [id for kind, id in hits if kind == "User"]
    group_ids = [id for kind, id in hits if kind == "Group"]
    users: dict[uuid.UUID, asyncpg.Record] = {}
    if user_ids:
        users = {r["user_id"]: r for r in await conn.fetch(SELECT_USERS, org_id, user_ids)}
    groups: dict[uuid.UUID, asyncpg.Record] = {}
    members: dict[uuid.UUID, list[dict[str, Any]]] | None = None
    sizes: dict[uuid.UUID, int] = {}
    if group_ids:
        groups = {r["group_id"]: r for r in await conn.fetch(SELECT_GROUPS, org_id, group_ids)}
        sizes = await member_counts(conn, org_id, group_ids)
        if not exclude_members:
            members = await members_of(conn, org_id, group_ids)
    results = []
    for kind, id in hits:
        if kind == "User":
            row = users[id]
            results.append(pb.SearchResult(user=user_proto(row, group_refs(row))))
        else:
            row = groups[id]
            listed = None if members is None else members[id]
            results.append(pb.SearchResult(group=group_proto(row, listed, sizes[id])))
    return pb.SearchResourcesResponse(
        results=results, total_results=int(found[0]["total_results"]), start_index=start
    )


class SearchService(search_service_pb2_grpc.SearchServiceServicer):
    def __init__(self, pool: asyncpg.Pool, guard: Guard) -> None:
        self._pool = pool
        self._guard = guard

    async def SearchResources(
        self, request: pb.SearchResourcesRequest, context: Ctx
    ) -> pb.SearchResourcesResponse:
        principal = await self._guard.scim(context)
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            return await search(conn, principal.org_id, request.query, request.exclude_members)
