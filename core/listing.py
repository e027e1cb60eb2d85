"""SCIM listing (RFC 7644 §3.4.2): filter, sort and page, with exact totals.

A page and its total come from one statement, so from one snapshot:
totalResults always agrees with the page, in one round trip. Order is stable
across pages: the sort key (if any), then creation order, then id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from core import counts, filters
from core.errors import InvalidArgument
from core.schema import ResourceSchema
from wando.provisioning.v1 import scim_pb2

if TYPE_CHECKING:
    from core.db import Conn

DEFAULT_COUNT = 100
MAX_COUNT = 1000

# the total for a filter: counted
COUNT_SQL = "SELECT count(*) AS n FROM {table} r WHERE {where}"

# The total, and the page: its ids first, then their rows, so that skipping
# `offset` entries costs an index-only walk of (org_id, created_at, id), not
# `offset` row fetches. A page without rows is one row of NULLs beside the
# total.
PAGE_SQL = """
WITH total AS (
    {total}
), page AS (
    SELECT r.{id} FROM {table} r
    WHERE {where}
    ORDER BY {order}
    LIMIT {limit} OFFSET {offset}
)
SELECT total.n AS total_results, r.*
FROM total
LEFT JOIN LATERAL (
    SELECT r.*{extra_columns}
    FROM page
    JOIN {table} r ON r.org_id = $1 AND r.{id} = page.{id}
    {extra_join}
) AS r ON true
ORDER BY {order}
"""


@dataclass(frozen=True)
class Table:
    name: str  # "users" or "groups"
    id_column: str  # "user_id" or "group_id"
    schema: ResourceSchema
    # more for each row of a page: columns (", x.a, …") from a join on r
    extra_columns: str = ""
    extra_join: str = ""


@dataclass(frozen=True)
class Page:
    rows: list[asyncpg.Record]
    total: int
    start_index: int


def page_bounds(query: scim_pb2.ListQuery) -> tuple[int, int]:
    """(1-based start index, count) with RFC 7644 §3.4.2.4's corrections."""
    start = max(query.start_index, 1)
    count = query.count if query.HasField("count") else DEFAULT_COUNT
    return start, min(max(count, 0), MAX_COUNT)


def sort_direction(query: scim_pb2.ListQuery) -> str:
    """ASC or DESC, as the query's sortOrder says."""
    if query.sort_order not in (
        scim_pb2.SORT_ORDER_UNSPECIFIED,
        scim_pb2.SORT_ORDER_ASCENDING,
        scim_pb2.SORT_ORDER_DESCENDING,
    ):
        raise InvalidArgument("sortOrder must be ascending or descending", field="sortOrder")
    return "DESC" if query.sort_order == scim_pb2.SORT_ORDER_DESCENDING else "ASC"


async def list_page(conn: Conn, table: Table, org_id: uuid.UUID, query: scim_pb2.ListQuery) -> Page:
    start, count = page_bounds(query)
    params = filters.Params(org_id)
    where = "r.org_id = $1"
    if query.filter.strip():
        where += f" AND ({filters.compile_filter(table.schema, query.filter, params)})"
    direction = sort_direction(query)
    order = f"r.created_at {direction}, r.{table.id_column} {direction}"
    if query.sort_by.strip():
        key = filters.sort_expression(table.schema, query.sort_by.strip())
        order = f"{key} {direction} NULLS LAST, r.created_at, r.{table.id_column}"
    if query.filter.strip():
        total = COUNT_SQL.format(table=table.name, where=where)
    else:  # every page of an import asks: the kept total, not a count
        total = counts.TOTAL.format(params.add(table.name))
    sql = PAGE_SQL.format(
        total=total,
        id=table.id_column,
        table=table.name,
        where=where,
        order=order,
        limit=count,
        offset=start - 1,
        extra_columns=table.extra_columns,
        extra_join=table.extra_join,
    )
    found = await conn.fetch(sql, *params.values)
    rows = [r for r in found if r[table.id_column] is not None]
    return Page(rows=rows, total=int(found[0]["total_results"]), start_index=start)
