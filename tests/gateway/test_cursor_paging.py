"""Cursor paging (RFC 9865) through the gateway, the core and PostgreSQL: a
walk sees every resource once, in the order index paging gives; cursors go
both ways; a cursor altered, expired, of another organisation, of another
query or of a server with another key is refused with the RFC's error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core.cursors import Cursors
from core.server import start_server
from tests.gateway.support import LIST_URN, ScimHttp, gateway, gateway_settings, okta_user
from tests.support import ADMIN_TOKEN, SERVICE_TOKEN

# each test that reaches the core through the gateway, over gRPC and in-process
GATEWAY_CORES = ("grpc", "local")

SECRET = "wando_cursor_shared-by-every-replica-in-this-test"


async def create_users(scim: ScimHttp, names: list[str], **extra: Any) -> list[str]:
    ids = []
    for name in names:
        reply = await scim.post("/Users", okta_user(name, **extra))
        assert reply.status == 201, reply.text
        ids.append(reply.body["id"])
    return ids


async def walk(scim: ScimHttp, path: str, count: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Follow nextCursor from an empty cursor to the end; (ids, pages)."""
    sep = "&" if "?" in path else "?"
    cursor = ""
    ids: list[str] = []
    pages: list[dict[str, Any]] = []
    for _ in range(100):
        reply = await scim.get(f"{path}{sep}cursor={cursor}&count={count}")
        assert reply.status == 200, reply.text
        assert reply.body["schemas"] == [LIST_URN] and "startIndex" not in reply.body
        assert reply.body["itemsPerPage"] == len(reply.body["Resources"])
        pages.append(reply.body)
        ids += [r["id"] for r in reply.body["Resources"]]
        if "nextCursor" not in reply.body:
            return ids, pages
        cursor = reply.body["nextCursor"]
    raise AssertionError("the walk did not end")


async def index_order(scim: ScimHttp, path: str) -> list[str]:
    sep = "&" if "?" in path else "?"
    reply = await scim.get(f"{path}{sep}startIndex=1&count=1000")
    return [r["id"] for r in reply.assert_list()]


async def test_a_walk_sees_every_user_once_in_index_order(scim: ScimHttp) -> None:
    await create_users(scim, [f"user{i}@initech.example" for i in range(7)])
    ids, pages = await walk(scim, "/Users", 3)
    assert ids == await index_order(scim, "/Users")
    assert [len(p["Resources"]) for p in pages] == [3, 3, 1]
    assert all(p["totalResults"] == 7 for p in pages)
    assert "previousCursor" not in pages[0]  # the first page has none
    assert all("previousCursor" in p for p in pages[1:])
    # a cursor is opaque and made of RFC 3986 unreserved characters
    assert all(
        set(p["nextCursor"])
        <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        for p in pages[:-1]
    )


async def test_previous_cursor_goes_back_a_page(scim: ScimHttp) -> None:
    await create_users(scim, [f"user{i}@initech.example" for i in range(7)])
    _, pages = await walk(scim, "/Users", 3)
    back = await scim.get(f"/Users?cursor={pages[2]['previousCursor']}&count=3")
    assert [r["id"] for r in back.body["Resources"]] == [r["id"] for r in pages[1]["Resources"]]
    assert back.body["nextCursor"] and back.body["previousCursor"]
    first = await scim.get(f"/Users?cursor={back.body['previousCursor']}&count=3")
    assert [r["id"] for r in first.body["Resources"]] == [r["id"] for r in pages[0]["Resources"]]
    assert "previousCursor" not in first.body  # nothing before the first page
    again = await scim.get(f"/Users?cursor={first.body['nextCursor']}&count=3")
    assert [r["id"] for r in again.body["Resources"]] == [r["id"] for r in pages[1]["Resources"]]


@pytest.mark.parametrize("order", ["ascending", "descending"])
async def test_a_sorted_filtered_walk_keeps_the_sort_with_missing_values(
    scim: ScimHttp, order: str
) -> None:
    # displayName missing on some users: they sort last both ways (NULLS LAST)
    await create_users(scim, ["b.one@initech.example", "a.two@initech.example"])
    await create_users(
        scim, ["c.three@initech.example", "d.four@initech.example"], displayName=None
    )
    await create_users(scim, ["e.five@initech.example", "zed@initech.example"])
    await create_users(scim, ["f.six@initech.example"], displayName="B One")  # a tie
    not_zed = quote('userName ne "zed@initech.example"')
    query = f"/Users?filter={not_zed}"
    query += f"&sortBy=displayName&sortOrder={order}"
    expected = await index_order(scim, query)
    assert len(expected) == 6
    for count in (1, 2, 4):
        ids, pages = await walk(scim, query, count)
        assert ids == expected, count
        # and back again from the last page, one previousCursor at a time
        seen = [r["id"] for r in pages[-1]["Resources"]]
        page = pages[-1]
        while "previousCursor" in page:
            page = (await scim.get(f"{query}&cursor={page['previousCursor']}&count={count}")).body
            seen = [r["id"] for r in page["Resources"]] + seen
        assert seen == expected, count


async def test_groups_walk_too(scim: ScimHttp) -> None:
    for i in range(5):
        reply = await scim.post("/Groups", {"displayName": f"Group {i}"})
        assert reply.status == 201
    ids, pages = await walk(scim, "/Groups?excludedAttributes=members", 2)
    assert ids == await index_order(scim, "/Groups")
    assert len(pages) == 3


async def test_search_request_takes_a_cursor(scim: ScimHttp) -> None:
    await create_users(scim, [f"user{i}@initech.example" for i in range(3)])
    search = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "count": 2}
    first = await scim.post("/Users/.search", {**search, "cursor": ""})
    assert len(first.body["Resources"]) == 2 and "startIndex" not in first.body
    second = await scim.post("/Users/.search", {**search, "cursor": first.body["nextCursor"]})
    assert len(second.body["Resources"]) == 1 and "nextCursor" not in second.body


async def test_index_paging_is_unchanged(scim: ScimHttp) -> None:
    await create_users(scim, [f"user{i}@initech.example" for i in range(3)])
    reply = await scim.get("/Users?startIndex=2&count=1")
    assert len(reply.assert_list()) == 1 and reply.body["startIndex"] == 2
    assert "nextCursor" not in reply.body and "previousCursor" not in reply.body


async def test_bad_cursors_get_the_rfc_errors(scim: ScimHttp, other: ScimHttp) -> None:
    await create_users(scim, [f"user{i}@initech.example" for i in range(3)])
    first = await scim.get("/Users?cursor=&count=1")
    cursor = first.body["nextCursor"]
    assert (await scim.get(f"/Users?cursor={cursor}&count=1")).status == 200
    payload, _, mac = cursor.partition(".")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    for bad in (f"{flipped}.{mac}", f"{payload}.{mac[:-2]}", "nonsense", "a.b", payload):
        (await scim.get(f"/Users?cursor={bad}&count=1")).assert_error(400, "invalidCursor")
    # characters no cursor has (RFC 9865: unreserved only)
    (await scim.get("/Users?cursor=%7B%22k%22%7D")).assert_error(400, "invalidCursor")
    # another organisation's token
    detail = (await other.get(f"/Users?cursor={cursor}&count=1")).assert_error(400, "invalidCursor")
    assert "empty cursor" in detail
    # the same organisation, another query: another filter, sort, or resource type
    changed = (
        f"/Users?cursor={cursor}&filter={quote('userName pr')}",
        f"/Users?cursor={cursor}&sortBy=userName",
        f"/Users?cursor={cursor}&sortOrder=descending",
        f"/Groups?cursor={cursor}",
    )
    for path in changed:
        (await scim.get(path)).assert_error(400, "invalidCursor")
    # both kinds of paging at once
    (await scim.get(f"/Users?cursor={cursor}&startIndex=1")).assert_error(400, "invalidValue")


@asynccontextmanager
async def replica(pool: asyncpg.Pool, cursors: Cursors) -> AsyncIterator[TestClient[Any, Any]]:
    """Another core process on the same database, with its gateway."""
    core = await start_server(pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN, cursors=cursors)
    try:
        async with gateway(gateway_settings(f"127.0.0.1:{core.port}")) as client:
            yield client
    finally:
        await core.stop(0)


async def test_replicas_with_one_key_take_each_others_cursors(
    scim: ScimHttp, pool: asyncpg.Pool
) -> None:
    await create_users(scim, [f"user{i}@initech.example" for i in range(3)])
    async with (
        replica(pool, Cursors(SECRET)) as a,
        replica(pool, Cursors(SECRET)) as b,
        replica(pool, Cursors("another key")) as c,
    ):
        first = await scim.as_client(a).get("/Users?cursor=&count=2")
        cursor = first.body["nextCursor"]
        second = await scim.as_client(b).get(f"/Users?cursor={cursor}&count=2")
        assert [r["userName"] for r in second.body["Resources"]] == ["user2@initech.example"]
        reply = await scim.as_client(c).get(f"/Users?cursor={cursor}&count=2")
        reply.assert_error(400, "invalidCursor")


async def test_an_old_cursor_has_expired(scim: ScimHttp, pool: asyncpg.Pool) -> None:
    await create_users(scim, [f"user{i}@initech.example" for i in range(3)])
    now = [1_000_000.0]
    async with replica(pool, Cursors(SECRET, 60, clock=lambda: now[0])) as client:
        on = scim.as_client(client)
        cursor = (await on.get("/Users?cursor=&count=1")).body["nextCursor"]
        now[0] += 60
        assert (await on.get(f"/Users?cursor={cursor}&count=1")).status == 200
        now[0] += 1
        detail = (await on.get(f"/Users?cursor={cursor}&count=1")).assert_error(
            400, "expiredCursor"
        )
        assert "60 seconds" in detail
