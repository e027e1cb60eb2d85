"""SCIM listing (RFC 7644 §3.4.2): filter, sort and page, with exact totals.

A page and its total come from one statement, so from one snapshot:
totalResults always agrees with the page, in one round trip. Order is stable
across pages: the sort key (if any), then creation order, then id.

Two ways to page. By index (startIndex, what Okta and Entra send): the page
skips its offset along the order. By cursor (RFC 9865, `cursor` set): the page
seeks to a position of the order that a signed cursor (core.cursors) names,
with no offset: in creation order an index range scan of
(org_id, created_at, id) starts right at it, so the last page of a long walk
costs what the first does. With sortBy the seek is exact but the matches are
sorted for every page.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from core import counts, cursors, filters
from core.cursors import Cursors, Position
from core.errors import InvalidArgument
from core.schema import ResourceSchema
from wando.provisioning.v1 import scim_pb2

if TYPE_CHECKING:
    from core.db import Conn

from common.wire import DEFAULT_COUNT, MAX_COUNT

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


# A page of cursor paging, and the total: no offset to skip, so the rows are
# read at once, from the cursor's position in the listing's order (in creation
# order: an index range scan that stops after `limit` rows). The extra join
# (a user's groups) runs for the page's rows only. An empty page is one row of
# NULLs beside the total.
CURSOR_PAGE_SQL = """
WITH total AS (
    {total}
)
SELECT total.n AS total_results, r.*{extra_columns}
FROM total
LEFT JOIN LATERAL (
    SELECT r.*{sort_key}
    FROM {table} r
    WHERE {where}
    ORDER BY {order}
    LIMIT {limit}
) AS r ON true
{extra_join}
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
    next_cursor: str = ""  # cursor paging only
    previous_cursor: str = ""


@dataclass(frozen=True)
class Order:
    """A listing's order: by `key` (a sortBy expression) if any, then
    creation order, then id; `ascending` is the direction of the first term."""

    id_column: str
    ascending: bool
    key: str | None

    def sql(self, *, backward: bool = False) -> str:
        """ORDER BY terms; `backward` reads the same order from its end."""
        ahead = "ASC" if self.ascending != backward else "DESC"
        if self.key is None:
            return f"r.created_at {ahead}, r.{self.id_column} {ahead}"
        tie = "DESC" if backward else "ASC"
        nulls = "NULLS FIRST" if backward else "NULLS LAST"
        return f"{self.key} {ahead} {nulls}, r.created_at {tie}, r.{self.id_column} {tie}"

    def position(self, row: asyncpg.Record) -> tuple[object, ...]:
        """Where `row` stands in this order (what a cursor holds)."""
        tail = (row["created_at"], row[self.id_column])
        return tail if self.key is None else (row["sort_key"], *tail)

    def after(self, position: Position, params: filters.Params) -> str:
        """The condition for rows after `position` (before it, if backward)."""
        backward = position.backward
        tie = "<" if backward else ">"
        if self.key is None:
            created, id = (params.add(v) for v in position.key)
            seek = "<" if self.ascending == backward else ">"
            return f"(r.created_at, r.{self.id_column}) {seek} ({created}, {id})"
        value, *tail = position.key
        created, id = (params.add(v) for v in tail)
        beyond = f"(r.created_at, r.{self.id_column}) {tie} ({created}, {id})"
        if value is None:  # NULLs sort last
            if backward:
                return f"({self.key} IS NOT NULL OR {beyond})"
            return f"({self.key} IS NULL AND {beyond})"
        k = params.add(value)
        seek = ">" if self.ascending != backward else "<"
        nulls = "" if backward else f" OR {self.key} IS NULL"
        return f"({self.key} {seek} {k} OR ({self.key} = {k} AND {beyond}){nulls})"


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


async def list_page(
    conn: Conn,
    table: Table,
    org_id: uuid.UUID,
    query: scim_pb2.ListQuery,
    cursor_keys: Cursors | None = None,
) -> Page:
    start, count = page_bounds(query)
    params = filters.Params(org_id)
    where = "r.org_id = $1"
    if query.filter.strip():
        where += f" AND ({filters.compile_filter(table.schema, query.filter, params)})"
    order = Order(
        table.id_column,
        ascending=sort_direction(query) == "ASC",
        key=filters.sort_expression(table.schema, query.sort_by.strip())
        if query.sort_by.strip()
        else None,
    )
    if query.filter.strip():
        total = COUNT_SQL.format(table=table.name, where=where)
    else:  # every page of an import asks: the kept total, not a count
        total = counts.TOTAL.format(params.add(table.name))
    if query.HasField("cursor"):
        if cursor_keys is None:
            raise InvalidArgument("cursor paging is not offered here", field="cursor")
        return await _cursor_page(
            conn, table, org_id, query, cursor_keys, where, total, order, count, params
        )
    sql = PAGE_SQL.format(
        total=total,
        id=table.id_column,
        table=table.name,
        where=where,
        order=order.sql(),
        limit=count,
        offset=start - 1,
        extra_columns=table.extra_columns,
        extra_join=table.extra_join,
    )
    found = await conn.fetch(sql, *params.values)
    rows = [r for r in found if r[table.id_column] is not None]
    return Page(rows=rows, total=int(found[0]["total_results"]), start_index=start)


async def _cursor_page(
    conn: Conn,
    table: Table,
    org_id: uuid.UUID,
    query: scim_pb2.ListQuery,
    keys: Cursors,
    where: str,
    total: str,
    order: Order,
    count: int,
    params: filters.Params,
) -> Page:
    """The page a cursor names (RFC 9865), of the listing list_page prepared
    (`where`, `total`, `order`, `params`): count + 1 rows read from its
    position tell whether there is a page beyond."""
    scope = cursors.scope(table.name, query.filter.strip(), query.sort_by.strip(), str(order))
    position = keys.open(query.cursor, org_id, scope) if query.cursor else None
    backward = position is not None and position.backward
    if position is not None:
        where += " AND " + order.after(position, params)
    sql = CURSOR_PAGE_SQL.format(
        total=total,
        table=table.name,
        where=where,
        order=order.sql(backward=backward),
        limit=count + 1,
        sort_key="" if order.key is None else f", {order.key} AS sort_key",
        extra_columns=table.extra_columns,
        extra_join=table.extra_join,
    )
    found = await conn.fetch(sql, *params.values)
    rows = [r for r in found if r[table.id_column] is not None]
    beyond = len(rows) > count
    rows = rows[:count]
    if backward:
        rows.reverse()
    more_after = (beyond and not backward) or (backward and bool(rows))
    more_before = (beyond and backward) or (position is not None and not backward)
    next_cursor = previous_cursor = ""
    if rows and more_after:
        next_cursor = keys.issue(org_id, scope, Position(order.position(rows[-1])))
    if rows and more_before:
        previous_cursor = keys.issue(
            org_id, scope, Position(order.position(rows[0]), backward=True)
        )
    return Page(
        rows=rows,
        total=int(found[0]["total_results"]),
        start_index=1,
        next_cursor=next_cursor,
        previous_cursor=previous_cursor,
    )
