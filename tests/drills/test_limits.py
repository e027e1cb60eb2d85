"""Drill (issue #8 item 4): every documented limit is enforced at its edge.

For each limit, a request exactly at it is accepted (or fails for another,
named reason, which proves the limit was not what refused it) and one just
beyond it is refused with the status, scimType and detail the limits table
in docs/reliability.md promises, through the real gateway and core, with the
database unchanged by the refusals.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from common.wire import MAX_COUNT
from core.documents import MAX_DEPTH as MAX_UNKNOWN_DEPTH
from core.documents import MAX_STRING_LENGTH, MAX_VALUES
from core.errors import MAX_MESSAGE_LENGTH
from core.filters import MAX_FILTER_LENGTH
from core.groups import MAX_MEMBERS_PER_REQUEST
from core.patch import MAX_OP_LENGTH, MAX_OPERATIONS, MAX_PATH_LENGTH
from core.server import CoreServer
from gateway.body import MAX_DEPTH
from gateway.query import MAX_ATTRIBUTE_PATH_LENGTH, MAX_ATTRIBUTE_PATHS, MAX_INT32
from tests.drills.hostile_support import Figures, Hostile, drill_gateway, expect, snapshot
from tests.drills.report import heavy
from tests.gateway.support import GROUP_URN, PATCH_URN, okta_user
from tests.support import new_org_with_token
from wando.provisioning.v1 import admin_service_pb2_grpc

BODY_LIMIT = 64 * 1024  # WANDO_MAX_BODY_BYTES for most tests: small, so cheap to exceed
FILTER_DEPTH = 32  # scim2-models' parser: scim2_models/path/grammar.py _MAX_DEPTH
PATCH_OP_LENGTH, PATCH_PATH_LENGTH = MAX_OP_LENGTH, MAX_PATH_LENGTH


@dataclass
class Org:
    http: Hostile
    pool: asyncpg.Pool
    org_id: str
    figures: Figures


@pytest.fixture
async def org(
    request: pytest.FixtureRequest,
    core: CoreServer,
    pool: asyncpg.Pool,
    admin_stub: admin_service_pb2_grpc.AdminServiceStub,
) -> AsyncIterator[Org]:
    org_id, secret = await new_org_with_token(admin_stub, "initech")
    figures = Figures()
    max_body = getattr(request, "param", BODY_LIMIT)
    async with drill_gateway(core, WANDO_MAX_BODY_BYTES=str(max_body)) as client:
        yield Org(Hostile(client, secret, figures), pool, org_id, figures)
    figures.report(f"limits.{request.node.name.removeprefix('test_')}")


def user(n: int | str, **extra: Any) -> dict[str, Any]:
    return okta_user(f"limit{n}@initech.example", **extra)


def patch_body(*operations: Any) -> dict[str, Any]:
    return {"schemas": [PATCH_URN], "Operations": list(operations)}


async def test_body_size(org: Org) -> None:
    """A body of exactly WANDO_MAX_BODY_BYTES is read; one byte more is 413,
    whether its length is declared or it arrives chunked."""
    body = user("size")
    text = json.dumps(body).encode()
    at_limit = text[:-1] + b" " * (BODY_LIMIT - len(text)) + b"}"
    assert len(at_limit) == BODY_LIMIT
    before = await snapshot(org.pool)
    over = at_limit[:-1] + b" }"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(over), 4096):
            yield over[i : i + 4096]

    expect(await org.http.send("POST", "/Users", data=over), 413, None, str(BODY_LIMIT))
    chunked = await org.http.send("POST", "/Users", data=chunks())  # type: ignore[arg-type]
    expect(chunked, 413, None, str(BODY_LIMIT))
    assert await snapshot(org.pool) == before
    assert (await org.http.send("POST", "/Users", data=at_limit)).status == 201


def nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_json_depth(org: Org) -> None:
    """Bodies nest at most gateway.body.MAX_DEPTH levels (an unknown attribute
    that deep is accepted and ignored); one more is 400 invalidSyntax."""
    at = await org.http.send("POST", "/Users", body=user("deep", x=nested(MAX_DEPTH - 1)))
    assert at.status == 201, at.text
    patched = await org.http.send(
        "PATCH", f"/Users/{at.body['id']}", body=patch_body({"op": "add", "value": nested(29)})
    )
    assert patched.status == 200, patched.text
    before = await snapshot(org.pool)
    over = await org.http.send("POST", "/Users", body=user("deeper", x=nested(MAX_DEPTH)))
    expect(over, 400, "invalidSyntax", f"deeper than {MAX_DEPTH} levels")
    assert await snapshot(org.pool) == before


async def test_unknown_schema_depth_and_size(org: Org) -> None:
    """Values under an unknown schema URN (kept as sent) nest at most
    core.documents.MAX_DEPTH levels and hold at most MAX_VALUES members."""
    urn = "urn:example:custom:1.0:User"
    ok = await org.http.send("POST", "/Users", body=user("u1", **{urn: nested(MAX_UNKNOWN_DEPTH)}))
    assert ok.status == 201, ok.text
    wide = {f"k{i}": i for i in range(MAX_VALUES)}
    assert (await org.http.send("POST", "/Users", body=user("u2", **{urn: wide}))).status == 201
    before = await snapshot(org.pool)
    deep = await org.http.send(
        "POST", "/Users", body=user("u3", **{urn: nested(MAX_UNKNOWN_DEPTH + 1)})
    )
    expect(deep, 400, "invalidValue", urn, f"more than {MAX_UNKNOWN_DEPTH} levels")
    wider = {**wide, "one more": 1}
    too_wide = await org.http.send("POST", "/Users", body=user("u4", **{urn: wider}))
    expect(too_wide, 400, "tooMany", urn, f"at most {MAX_VALUES}")
    assert await snapshot(org.pool) == before


async def test_attribute_length(org: Org) -> None:
    """Strings hold at most MAX_STRING_LENGTH characters, in any attribute."""
    at = await org.http.send("POST", "/Users", body=user("len", title="t" * MAX_STRING_LENGTH))
    assert at.status == 201 and len(at.body["title"]) == MAX_STRING_LENGTH, at.text
    before = await snapshot(org.pool)
    long = "t" * (MAX_STRING_LENGTH + 1)
    for body in (
        user("len2", title=long),
        user("len3", name={"givenName": long}),
        user("len4", emails=[{"value": long}]),
        {**user("len5"), "urn:example:x:1.0:User": {"note": long}},
    ):
        reply = await org.http.send("POST", "/Users", body=body)
        expect(reply, 400, "invalidValue", f"longer than {MAX_STRING_LENGTH} characters")
    op = {"op": "replace", "path": "title", "value": long}
    reply = await org.http.send("PATCH", f"/Users/{at.body['id']}", body=patch_body(op))
    expect(reply, 400, "invalidValue", "title", str(MAX_STRING_LENGTH))
    assert await snapshot(org.pool) == before


async def test_values_per_multi_valued_attribute(org: Org) -> None:
    """A multi-valued attribute holds at most MAX_VALUES values, by POST or PATCH."""
    emails = [{"value": f"e{i}@initech.example"} for i in range(MAX_VALUES)]
    at = await org.http.send("POST", "/Users", body=user("mv", emails=emails))
    assert at.status == 201 and len(at.body["emails"]) == MAX_VALUES, at.text
    before = await snapshot(org.pool)
    more = [*emails, {"value": "one.more@initech.example"}]
    over = await org.http.send("POST", "/Users", body=user("mv2", emails=more))
    expect(over, 400, "tooMany", "emails", f"at most {MAX_VALUES}")
    op = {"op": "add", "path": "emails", "value": [{"value": "one.more@initech.example"}]}
    patched = await org.http.send("PATCH", f"/Users/{at.body['id']}", body=patch_body(op))
    expect(patched, 400, "tooMany", "emails", f"at most {MAX_VALUES}")
    assert await snapshot(org.pool) == before


async def test_operations_per_patch(org: Org) -> None:
    """A PATCH holds at most MAX_OPERATIONS operations."""
    created = await org.http.send("POST", "/Users", body=user("ops"))
    url = f"/Users/{created.body['id']}"
    ops = [{"op": "replace", "path": "title", "value": f"t{i}"} for i in range(MAX_OPERATIONS)]
    at = await org.http.send("PATCH", url, body=patch_body(*ops))
    assert at.status == 200 and at.body["title"] == f"t{MAX_OPERATIONS - 1}", at.text
    before = await snapshot(org.pool)
    over = await org.http.send("PATCH", url, body=patch_body(*ops, ops[0]))
    expect(over, 400, "tooMany", f"at most {MAX_OPERATIONS} operations")
    assert await snapshot(org.pool) == before


async def test_patch_op_and_path_length(org: Org) -> None:
    """A PATCH path has at most 4096 characters and an op at most 32: at the
    limit the path is read (and found unknown); beyond, it is refused as too long."""
    created = await org.http.send("POST", "/Users", body=user("path"))
    url = f"/Users/{created.body['id']}"
    before = await snapshot(org.pool)
    at = {"op": "add", "path": "x" * PATCH_PATH_LENGTH, "value": 1}
    expect(await org.http.send("PATCH", url, body=patch_body(at)), 400, "invalidPath", "unknown")
    over = {**at, "path": "x" * (PATCH_PATH_LENGTH + 1)}
    reply = await org.http.send("PATCH", url, body=patch_body(over))
    expect(reply, 400, "invalidPath", '"path" is longer than', str(PATCH_PATH_LENGTH))
    op = {"op": "a" * (PATCH_OP_LENGTH + 1), "path": "title", "value": 1}
    reply = await org.http.send("PATCH", url, body=patch_body(op))
    expect(reply, 400, "invalidValue", '"op" is longer than', str(PATCH_OP_LENGTH))
    deep = "emails[" + "not (" * FILTER_DEPTH + 'value eq "x"' + ")" * FILTER_DEPTH + "]"
    reply = await org.http.send("PATCH", url, body=patch_body({"op": "remove", "path": deep}))
    expect(reply, 400, "invalidPath", f"more than {FILTER_DEPTH}")
    assert await snapshot(org.pool) == before


async def test_filter_length_and_depth(org: Org) -> None:
    """Filters have at most MAX_FILTER_LENGTH characters and nest at most 32
    expressions; beyond either, 400 invalidFilter saying which."""
    prefix = 'userName eq "'
    at = prefix + "a" * (MAX_FILTER_LENGTH - len(prefix) - 1) + '"'
    assert len(at) == MAX_FILTER_LENGTH
    (await org.http.send("GET", f"/Users?filter={quote(at)}")).assert_list()
    over = prefix + "a" * (MAX_FILTER_LENGTH - len(prefix)) + '"'
    for reply in (
        await org.http.send("POST", "/Users/.search", body={"filter": over}),
        await org.http.send("POST", "/Groups/.search", body={"filter": over}),
    ):
        expect(reply, 400, "invalidFilter", "too long", str(MAX_FILTER_LENGTH))

    def negated(depth: int) -> str:
        return "not (" * depth + 'userName eq "a"' + ")" * depth

    # each `not` (and/or chain, value path) is one level; a comparison is none
    (await org.http.send("GET", f"/Users?filter={quote(negated(FILTER_DEPTH))}")).assert_list()
    deep = await org.http.send("GET", f"/Users?filter={quote(negated(FILTER_DEPTH + 1))}")
    expect(deep, 400, "invalidFilter", f"nests more than {FILTER_DEPTH}")
    # parentheses alone add no depth: 1000 of them are only length
    parens = "(" * 1000 + 'userName eq "a"' + ")" * 1000
    (await org.http.send("POST", "/Users/.search", body={"filter": parens})).assert_list()


async def test_attributes_lists(org: Org) -> None:
    """attributes / excludedAttributes list at most MAX_ATTRIBUTE_PATHS paths
    of at most MAX_ATTRIBUTE_PATH_LENGTH characters each."""
    await org.http.send("POST", "/Users", body=user("attrs"))
    paths = ["userName"] + [f"x{i}" for i in range(MAX_ATTRIBUTE_PATHS - 1)]
    for name in ("attributes", "excludedAttributes"):
        at = await org.http.send("POST", "/Users/.search", body={name: paths})
        assert len(at.assert_list()) == 1
        over = await org.http.send("GET", f"/Users?{name}={','.join([*paths, 'x'])}")
        expect(over, 400, "tooMany", name, f"at most {MAX_ATTRIBUTE_PATHS}")
        long = "a" * MAX_ATTRIBUTE_PATH_LENGTH
        assert (await org.http.send("GET", f"/Users?{name}={long}")).status == 200
        too_long = await org.http.send("GET", f"/Users?{name}={long}a")
        expect(too_long, 400, "invalidValue", name, str(MAX_ATTRIBUTE_PATH_LENGTH))


async def test_count_and_start_index(org: Org) -> None:
    """count is capped at MAX_COUNT, startIndex at 2^31-1 (RFC 7644 §3.4.2.4:
    corrected, not refused), with totalResults exact."""
    total = MAX_COUNT + 5
    async with org.pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO users (org_id, user_id, user_name, attributes) VALUES ($1, $2, $3, $4)",
            [
                (uuid.UUID(org.org_id), uuid.uuid4(), f"bulk{i}@x.example", {"userName": "x"})
                for i in range(total)
            ],
        )
        await conn.execute(  # what a create does beside its insert (core.counts)
            "INSERT INTO resource_counts (org_id, resource, slot, n) VALUES ($1, 'users', 0, $2)"
            " ON CONFLICT (org_id, resource, slot) DO UPDATE SET n = resource_counts.n + $2",
            uuid.UUID(org.org_id),
            total,
        )
    page = await org.http.send("GET", "/Users?count=5000&attributes=userName")
    assert len(page.assert_list()) == MAX_COUNT and page.body["totalResults"] == total
    last = await org.http.send("GET", f"/Users?startIndex={MAX_COUNT + 1}&count=5000")
    assert len(last.assert_list()) == 5 and last.body["startIndex"] == MAX_COUNT + 1
    beyond = await org.http.send("GET", "/Users?startIndex=99999999999999999999")
    assert beyond.assert_list() == [] and beyond.body["startIndex"] == MAX_INT32


@pytest.mark.parametrize("org", [4 * 1024 * 1024], indirect=True)
async def test_members_per_request(org: Org) -> None:
    """A group write names at most MAX_MEMBERS_PER_REQUEST members: exactly
    that many (unknown ids) is refused for the ids, one more for the count.
    Needs the largest body WANDO_MAX_BODY_BYTES allows (4 MiB)."""
    if not heavy():
        pytest.skip("two 2 MB requests of 100,000 members, ~3 s each; WANDO_HEAVY_DRILLS=1 runs it")
    before = await snapshot(org.pool)
    members = [{"value": str(i)} for i in range(MAX_MEMBERS_PER_REQUEST)]
    body = {"schemas": [GROUP_URN], "displayName": "Everyone", "members": members}
    at = await org.http.send("POST", "/Groups", body=body, max_seconds=30)
    expect(at, 400, "invalidValue", "unknown")
    body["members"] = [*members, {"value": "one more"}]
    over = await org.http.send("POST", "/Groups", body=body, max_seconds=30)
    expect(over, 400, "tooMany", f"at most {MAX_MEMBERS_PER_REQUEST} members")
    assert await snapshot(org.pool) == before


@pytest.mark.parametrize("org", [1024 * 1024], indirect=True)
async def test_error_messages_are_bounded(org: Org) -> None:
    """A core error quoting a huge client value (a 1 MB sortBy, key or member
    id) stays a 400 with a shortened detail, never a 5xx from gRPC's trailer limit."""
    huge = "urn:" + ":a" * 200_000
    reply = await org.http.send("POST", "/Users/.search", body={"sortBy": huge})
    detail = expect(reply, 400, "invalidValue", "sortBy")
    assert len(detail) <= MAX_MESSAGE_LENGTH
    group = {"displayName": "G", "members": [{"value": "m" * 4000 + str(i)} for i in range(8)]}
    detail = expect(await org.http.send("POST", "/Groups", body=group), 400, "invalidValue")
    assert "unknown" in detail and len(detail) <= MAX_MESSAGE_LENGTH
