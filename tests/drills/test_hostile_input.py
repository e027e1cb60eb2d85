"""Drill (issue #8 item 3): hostile input through the gateway.

Hand-written and generated (hypothesis) requests that no identity provider
sends: malformed and deeply nested JSON, wrong types in every attribute, huge
strings and arrays, invalid UTF-8 and lone surrogates, absurd paging, filter,
sortBy, attributes and PATCH-path soup, SQL injection, unknown schemas and
operations, method and path probing. What must hold for every one of them:

- never a 5xx (Hostile.send asserts it on every answer);
- every rejection is an RFC 7644 §3.12 error naming the problem (scim_error);
- every answer within hostile_support.MAX_SECONDS (no unbounded work);
- the database is unchanged by a rejected request (snapshot before and after).

Each test prints its figures (requests, statuses, scimTypes, slowest answer)
and appends them to $WANDO_DRILL_REPORT. WANDO_HEAVY_DRILLS=1 runs ten times
the generated examples.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.schema import ResourceSchema, group_schema, user_schema
from core.server import CoreServer
from tests.drills.hostile_support import (
    Figures,
    Hostile,
    drill_gateway,
    expect,
    scim_error,
    snapshot,
)
from tests.drills.report import heavy
from tests.gateway.support import ENTERPRISE_URN, GROUP_URN, PATCH_URN, Reply, okta_user
from tests.support import new_org_with_token
from wando.provisioning.v1 import admin_service_pb2_grpc

EXAMPLES = 1500 if heavy() else 150

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # the same examples on every machine, no .hypothesis/ left behind
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one gateway and database for all examples
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)

_names = itertools.count()


@dataclass
class Target:
    """One organisation behind a gateway, with a user and a group to aim at."""

    http: Hostile
    pool: asyncpg.Pool
    user_id: str
    group_id: str
    figures: Figures
    extra: dict[str, Any]

    async def rejected(self, reply: Reply, before: dict[str, str]) -> bool:
        """Whether `reply` is a rejection; if so, check it changed nothing."""
        if reply.status < 400:
            return False
        scim_error(reply)
        assert await snapshot(self.pool) == before, "a rejected request changed the database"
        return True


@pytest.fixture
async def target(
    request: pytest.FixtureRequest,
    core: CoreServer,
    pool: asyncpg.Pool,
    admin_stub: admin_service_pb2_grpc.AdminServiceStub,
) -> AsyncIterator[Target]:
    """Reports the test's figures once it is over (a hypothesis test runs its
    body once per example, with this one fixture)."""
    _, secret = await new_org_with_token(admin_stub, "initech")
    figures = Figures()
    async with drill_gateway(core) as client:
        http = Hostile(client, secret, figures)
        user = await http.send("POST", "/Users", body=okta_user("seed@initech.example"))
        group = await http.send(
            "POST",
            "/Groups",
            body={
                "schemas": [GROUP_URN],
                "displayName": "Seed",
                "members": [{"value": user.body["id"]}],
            },
        )
        assert (user.status, group.status) == (201, 201), (user.text, group.text)
        drill = Target(http, pool, user.body["id"], group.body["id"], figures, {})
        yield drill
    name = request.node.name.removeprefix("test_")
    figures.report(f"hostile.{name}", **drill.extra)


def patch_body(*operations: Any) -> dict[str, Any]:
    return {"schemas": [PATCH_URN], "Operations": list(operations)}


def nested(depth: int, kind: str) -> bytes:
    """A JSON object whose arrays or objects nest `depth` levels in all."""
    if kind == "list":
        return b'{"x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    return b'{"x":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


# ---- malformed bodies


MALFORMED = {
    "empty": b"",
    "blank": b" \r\n\t ",
    "truncated": b'{"userName": "a',
    "not json": b"userName=a&active=true",
    "array": b'[{"userName": "a"}]',
    "string": b'"userName"',
    "null": b"null",
    "NaN": b'{"userName": "a", "x": NaN}',
    "Infinity": b'{"userName": "a", "x": -Infinity}',
    "overflowing float": b'{"userName": "a", "x": 1e999}',
    "400-digit integer": b'{"userName": "a", "x": ' + b"9" * 400 + b"}",
    "invalid UTF-8": b'{"userName": "\xff\xfe\xc3"}',
    "overlong UTF-8": b'{"userName": "\xc0\xaf"}',
    "lone surrogate value": b'{"userName": "\\ud800"}',
    "lone surrogate key": b'{"userName": "a", "urn:x:y": {"\\udc00": 1}}',
    "33 nested objects": nested(33, "object"),
    "33 nested arrays": nested(33, "list"),
    "100,000 nested arrays": b"[" * 100_000 + b"]" * 100_000,
    "100,000 nested objects": b'{"a":' * 100_000 + b"}" * 100_000,
    "trailing garbage": b'{"userName": "a"} {"userName": "b"}',
    "comment": b'{"userName": "a" /* hi */}',
    "single quotes": b"{'userName': 'a'}",
    "control character": b'{"userName": "a\x01b"}',
}


async def test_malformed_bodies_are_invalid_syntax_everywhere(target: Target) -> None:
    """Every body-taking endpoint refuses each malformed body with 400
    invalidSyntax saying why, and nothing is written."""
    endpoints = [
        ("POST", "/Users"),
        ("POST", "/Groups"),
        ("PUT", f"/Users/{target.user_id}"),
        ("PUT", f"/Groups/{target.group_id}"),
        ("PATCH", f"/Users/{target.user_id}"),
        ("PATCH", f"/Groups/{target.group_id}"),
        ("POST", "/Users/.search"),
        ("POST", "/Groups/.search"),
    ]
    before = await snapshot(target.pool)
    for (method, path), (label, data) in itertools.product(endpoints, MALFORMED.items()):
        reply = await target.http.send(method, path, data=data)
        detail = expect(reply, 400, "invalidSyntax")
        if "nested" in label:
            assert "32 levels" in detail, (label, detail)
        if "surrogate" in label:
            assert "not valid Unicode" in detail, (label, detail)
    assert await snapshot(target.pool) == before
    target.extra["bodies"] = len(MALFORMED)


@fuzz
@given(data=st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
async def test_arbitrary_bytes_as_a_body(target: Target, data: bytes) -> None:
    """Any bytes at all: a SCIM error, invalidSyntax unless they were a JSON object."""
    before = await snapshot(target.pool)
    reply = await target.http.send("POST", "/Users", data=data)
    if await target.rejected(reply, before) and reply.body.get("scimType") != "invalidSyntax":
        assert isinstance(json.loads(data), dict), reply.text


# ---- wrong types in every attribute


WRONG: dict[str, list[Any]] = {
    "string": [5, True, {"a": "b"}, ["x"], 1.5],
    "reference": [5, False, {"a": "b"}],
    "binary": [5, {"a": "b"}],
    "dateTime": [5, True, ["2024-01-01T00:00:00Z"]],
    "boolean": ["maybe", 1, 0, {"a": True}, [True]],
    "integer": ["5", 1.5, True, 2**64],
    "decimal": ["5", True],
    "complex": [5, True, 1.5, [[1]]],
}


def wrong_cases(schema: ResourceSchema) -> list[tuple[str, dict[str, Any]]]:
    """(the attribute named, a body fragment giving it a value of the wrong type)
    for every writable attribute and sub-attribute of `schema`."""
    tops = [(a, a.name) for a in schema.attrs.values()]
    tops += [
        (a, f"{ENTERPRISE_URN}:{a.name}")
        for attrs in schema.extensions.values()
        for a in attrs.values()
    ]
    cases: list[tuple[str, dict[str, Any]]] = []
    for attr, key in tops:
        if attr.mutability == "readOnly" or attr.name in ("password", "members"):
            continue  # ignored when sent (password: accepted, never stored)
        for value in WRONG[attr.type]:
            if attr.type == "complex" and not attr.multi_valued and value is True:
                continue
            cases.append((attr.name, {key: value}))
        for sub in attr.sub_attrs.values():
            if sub.mutability == "readOnly":
                continue
            for value in WRONG[sub.type][:2]:
                item = {sub.name: value}
                cases.append(
                    (f"{attr.name}.{sub.name}", {key: [item] if attr.multi_valued else item})
                )
    return cases


async def test_wrong_types_in_every_attribute(target: Target) -> None:
    """POST and PATCH with a wrongly-typed value in each attribute and
    sub-attribute of User (core and enterprise) and Group: 400 invalidValue
    naming the attribute, nothing written."""
    before = await snapshot(target.pool)
    sent = 0
    for resource, schema, endpoint, target_id in (
        ("User", user_schema(), "/Users", target.user_id),
        ("Group", group_schema(), "/Groups", target.group_id),
    ):
        for name, fragment in wrong_cases(schema):
            n = next(_names)
            base: dict[str, Any] = (
                okta_user(f"wrong{n}@initech.example")
                if resource == "User"
                else {"schemas": [GROUP_URN], "displayName": f"Wrong {n}"}
            )
            for key in fragment:
                base.pop(key, None)
            created = await target.http.send("POST", endpoint, body={**base, **fragment})
            detail = expect(created, 400, created.body.get("scimType"), name.split(".")[-1])
            assert created.body.get("scimType") in ("invalidValue", "tooMany"), created.body
            ((key, value),) = fragment.items()
            op = {"op": "replace", "path": key, "value": value}
            patched = await target.http.send(
                "PATCH", f"{endpoint}/{target_id}", body=patch_body(op)
            )
            scim_error(patched, name.split(".")[-1])
            assert patched.status == 400, (fragment, patched.text)
            sent += 2
            assert detail
    members = [5, "x", [{"value": 5}], [{"display": "no value"}], {"value": ""}, [[]]]
    for value in members:
        reply = await target.http.send(
            "POST", "/Groups", body={"displayName": f"M {next(_names)}", "members": value}
        )
        expect(reply, 400, "invalidValue", "members")
    assert await snapshot(target.pool) == before
    target.extra["cases"] = sent + len(members)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)

USER_KEYS = sorted(
    {a.name for a in user_schema().attrs.values()}
    | {f"{ENTERPRISE_URN}:{a.name}" for x in user_schema().extensions.values() for a in x.values()}
    | {ENTERPRISE_URN, "urn:example:custom:1.0:User", "schemas", "Operations", "unknownAttribute"}
)


@fuzz
@given(key=st.sampled_from(USER_KEYS), value=JSON)
async def test_arbitrary_json_in_every_user_attribute(target: Target, key: str, value: Any) -> None:
    """Any JSON value in any User attribute: created, or a SCIM error naming
    the attribute (or, for a lone surrogate, saying so) with nothing written."""
    body = {**okta_user(f"any{next(_names)}@initech.example"), key: value}
    before = await snapshot(target.pool)
    reply = await target.http.send("POST", "/Users", body=body)
    if await target.rejected(reply, before):
        detail = reply.body["detail"]
        named = key.rsplit(":", 1)[-1] if key.startswith("urn:ietf") else key
        assert named.lower() in detail.lower() or "Unicode" in detail, (key, value, detail)


# ---- paging, filters, sortBy, attributes


ABSURD_NUMBERS = [
    "-1", "0", "-0", "+5", " 7 ", "", "2147483648", "9223372036854775808", "9" * 5000,
    "-" + "9" * 5000, "1e3", "0x10", "1.0", "abc", "\u0663", "\uff11", "NaN", "null", "[1]", "%00",
]  # fmt: skip


async def test_absurd_start_index_and_count(target: Target) -> None:
    """startIndex and count: any integer is corrected (RFC 7644 §3.4.2.4);
    anything else is 400 invalidValue naming the parameter, by GET or .search."""
    listed = rejected = 0
    for name, raw in itertools.product(("startIndex", "count"), ABSURD_NUMBERS):
        reply = await target.http.send("GET", f"/Users?{name}={quote(raw)}")
        if reply.status == 200:
            listed += 1
            assert reply.body["startIndex"] >= 1 and 0 <= reply.body["itemsPerPage"] <= 1000
        else:
            rejected += 1
            expect(reply, 400, "invalidValue", name)
    for name, value in itertools.product(
        ("startIndex", "count"), [-(10**30), 10**30, 1e300, -1e300, 2.5, "5", True, [1], {"a": 1}]
    ):
        reply = await target.http.send("POST", "/Users/.search", body={name: value})
        if reply.status != 200:
            expect(reply, 400, "invalidValue", name)
    target.extra.update(listed=listed, rejected=rejected)


TOKENS = [
    "userName", "USERNAME", "emails", "emails.value", "emails.type", "name.givenName", "id",
    "meta.created", "meta.lastModified", "groups.value", "members.value", "active", "title",
    f"{ENTERPRISE_URN}:department", f"{ENTERPRISE_URN}:manager.value", "urn:x:y:z", "x", "x.y.z",
    "eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr", "and", "or", "not", "EQ", "Or",
    '"a"', '""', '"\\"', '"a\\"b"', "true", "false", "null", "1", "-1.5e3", "1e999",
    '"2011-05-13T04:42:34Z"', '"not a date"', "(", ")", "[", "]", ".", ",", " ", "'",
    '"\' OR 1=1 --"', "; DROP TABLE users; --", "$1", "\\", "%", "_", "*",
]  # fmt: skip

SOUP = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=14).map(" ".join)
# nearly valid: comparisons joined by and/or, some negated or bracketed
COMPARISON = st.tuples(
    st.sampled_from(TOKENS[:18]), st.sampled_from(TOKENS[18:28]), st.sampled_from(TOKENS[33:45])
).map(" ".join)
TERM = COMPARISON | COMPARISON.map("not ({})".format) | COMPARISON.map("emails[{}]".format)
NEAR = st.lists(TERM, min_size=1, max_size=5).map(" and ".join) | st.lists(
    TERM, min_size=1, max_size=5
).map(" or ".join)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)


@fuzz
@given(text=NEAR | SOUP | TEXT, how=st.sampled_from(["GET", "search"]))
async def test_filter_fuzz(target: Target, text: str, how: str) -> None:
    """Filter grammar soup and arbitrary text: a list, or 400 invalidFilter
    saying what is wrong with the filter."""
    for endpoint in ("/Users", "/Groups"):
        if how == "GET":
            reply = await target.http.send("GET", f"{endpoint}?filter={quote(text)}")
        else:
            reply = await target.http.send("POST", f"{endpoint}/.search", body={"filter": text})
        if reply.status != 200:
            detail = expect(reply, 400, "invalidFilter").lower()
            # it says what is wrong: the filter, or the attribute or value at fault
            named = [word for word in re.findall(r"[\w.:$-]+", text.lower()) if word in detail]
            assert "filter" in detail or named, detail


@fuzz
@given(
    sort_by=st.sampled_from(TOKENS[:18]) | SOUP | TEXT,
    attributes=st.lists(SOUP | TEXT, max_size=5).map(",".join),
    order=st.sampled_from(["", "ascending", "DESCENDING", "sideways", "1"]),
)
async def test_sort_by_and_attributes_fuzz(
    target: Target, sort_by: str, attributes: str, order: str
) -> None:
    """sortBy, sortOrder, attributes, excludedAttributes from soup and text:
    a list, or 400 invalidValue naming the parameter."""
    query = "&".join(
        f"{k}={quote(v)}"
        for k, v in (
            ("sortBy", sort_by),
            ("sortOrder", order),
            ("attributes", attributes),
            ("excludedAttributes", attributes),
        )
    )
    ids = {"/Users": target.user_id, "/Groups": target.group_id}
    for endpoint in ("/Users", "/Groups"):
        reply = await target.http.send("GET", f"{endpoint}?{query}")
        if reply.status != 200:
            detail = expect(reply, 400, "invalidValue")
            assert "sort" in detail.lower(), detail
        get = await target.http.send(
            "GET", f"{endpoint}/{ids[endpoint]}?attributes={quote(attributes)}"
        )
        assert get.status == 200 and get.body["id"] == ids[endpoint], get.text


CORE_NOPE = "urn:ietf:params:scim:schemas:core:2.0:Nope"
PATCH_TYPES = {"invalidPath", "invalidFilter", "invalidValue", "noTarget", "mutability", "tooMany"}


@fuzz
@given(
    path=SOUP | TEXT,
    op=st.sampled_from(["add", "replace", "remove", "Replace", "copy", "move", "test", ""]),
    value=st.sampled_from(["x", 5, None, {"value": "x"}, [{"value": "x"}], {}]),
    endpoint=st.sampled_from(["Users", "Groups"]),
)
async def test_patch_path_fuzz(
    target: Target, path: str, op: str, value: Any, endpoint: str
) -> None:
    """PATCH paths from filter soup and text, with every op: applied, or a
    SCIM error of the kind RFC 7644 §3.5.2 names, and nothing written."""
    resource = target.user_id if endpoint == "Users" else target.group_id
    before = await snapshot(target.pool)
    body = patch_body({"op": op, "path": path, "value": value})
    reply = await target.http.send("PATCH", f"/{endpoint}/{resource}", body=body)
    if await target.rejected(reply, before):
        assert reply.body.get("scimType") in PATCH_TYPES | {"invalidSyntax"}, reply.body


# ---- SQL injection


TRAP = "o'brien' OR '1'='1@x.example"
INJECTIONS = [
    "' OR '1'='1",
    '" OR "1"="1',
    "'; DROP TABLE users; --",
    "x') OR 1=1 --",
    "$1",
    "%' OR '%'='",
    "\\'; SELECT pg_sleep(5); --",
    "a' UNION SELECT user_name FROM users --",
    "*/ OR 1=1 /*",
]


async def test_sql_injection_finds_nothing_and_changes_nothing(target: Target) -> None:
    """Injection text as a filter value matches only what holds that exact
    text; as an attribute name, sortBy or PATCH path it is a SCIM error; as an
    attributes list it selects nothing; as an id it finds nothing. The tables
    stay as they were, and a user whose name *is* the injection is found as such."""
    trap = await target.http.send("POST", "/Users", body=okta_user(TRAP))
    assert trap.status == 201, trap.text
    before = await snapshot(target.pool)
    for text in INJECTIONS:
        literal = json.dumps(text)
        for where in (
            f"userName eq {literal}",
            f"emails[value co {literal}]",
            f"title sw {literal}",
        ):
            reply = await target.http.send("GET", f"/Users?filter={quote(where)}")
            # only the user whose e-mail really contains the text may match
            really = where.startswith("emails") and text.lower() in TRAP.lower()
            expected = [trap.body["id"]] if really else []
            assert [r["id"] for r in reply.assert_list()] == expected, (where, reply.text[:300])
        for soup in (f'userName eq "a" {text}', f'{text} eq "a"', f'userName {text} "a"'):
            expect(
                await target.http.send("GET", f"/Users?filter={quote(soup)}"), 400, "invalidFilter"
            )
        expect(
            await target.http.send("GET", f"/Users?sortBy={quote(text)}"),
            400,
            "invalidValue",
            "sortBy",
        )
        listed = await target.http.send("GET", f"/Users?attributes={quote(text)}")
        assert all(set(r) <= {"id", "schemas", "meta"} for r in listed.assert_list()), listed.text
        missing = await target.http.send("GET", f"/Users/{quote(text, safe='')}")
        expect(missing, 404, None)
    assert await snapshot(target.pool) == before
    found = await target.http.send(
        "GET", "/Users?filter=" + quote("userName eq \"o'brien' OR '1'='1@x.example\"")
    )
    assert [r["id"] for r in found.assert_list()] == [trap.body["id"]]
    everyone = (await target.http.send("GET", "/Users")).assert_list()
    assert len(everyone) == 2, "the injection text must not have matched anyone else"
    target.extra["payloads"] = len(INJECTIONS)


# ---- unknown schemas and operations


async def test_unknown_operations_and_envelopes(target: Target) -> None:
    """PATCH ops the RFC does not define and broken PatchOp envelopes are
    refused with the right scimType; an unknown `schemas` value is not echoed."""
    before = await snapshot(target.pool)
    url = f"/Users/{target.user_id}"
    for op in ("copy", "move", "test", "delete", "ADDD", " add"):
        reply = await target.http.send(
            "PATCH", url, body=patch_body({"op": op, "path": "title", "value": "x"})
        )
        expect(reply, 400, "invalidValue", "operation")
    envelopes: list[tuple[Any, str, str]] = [
        ({"schemas": [PATCH_URN]}, "invalidSyntax", "Operations"),
        ({"schemas": [PATCH_URN], "Operations": {"op": "add"}}, "invalidSyntax", "Operations"),
        ({"schemas": [PATCH_URN], "Operations": ["add"]}, "invalidSyntax", "Operations[0]"),
        ({"schemas": [PATCH_URN], "Operations": [{"path": "title"}]}, "invalidSyntax", "op"),
        ({"schemas": [PATCH_URN], "Operations": [{"op": 5}]}, "invalidSyntax", "op"),
        (patch_body({"op": "add", "path": 5, "value": "x"}), "invalidSyntax", "path"),
        (patch_body({"op": "add", "path": "title"}), "invalidValue", "value"),
        (patch_body({"op": "remove"}), "noTarget", "path"),
        (patch_body({"op": "add", "value": "not an object"}), "invalidValue", "value"),
        (patch_body({"op": "replace", "path": "id", "value": "x"}), "mutability", "id"),
        (patch_body({"op": "replace", "path": "meta.created", "value": "x"}), "mutability", "meta"),
        (patch_body({"op": "add", "path": f"{CORE_NOPE}:x", "value": 1}), "invalidPath", "Nope"),
        (patch_body({"op": "add", "path": 'emails[type eq "work"', "value": 1}), "invalidPath", ""),
    ]  # fmt: skip
    for body, scim_type, mention in envelopes:
        expect(await target.http.send("PATCH", url, body=body), 400, scim_type, mention)
    assert await snapshot(target.pool) == before
    odd = await target.http.send(
        "POST",
        "/Users",
        body={
            "schemas": ["urn:evil:schema", 5],
            "userName": "odd@x.example",
            "urn:evil:schema": {"a": 1},
        },
    )
    assert odd.status == 201, odd.text
    assert "urn:evil:schema" not in odd.body["schemas"] or "urn:evil:schema" in odd.body
    target.extra["envelopes"] = len(envelopes)


# ---- method and path probing


async def test_method_and_path_probing(target: Target) -> None:
    """Methods and paths the API does not have: 404 or 405 (with Allow) as SCIM
    errors, before and without authentication; requests that are not HTTP at
    all, or whose head is over a limit, are refused by the HTTP parser, as SCIM
    errors too (gateway.protocol)."""
    user = f"/Users/{target.user_id}"
    probes: list[tuple[str, str, int]] = [
        ("TRACE", "/Users", 405), ("OPTIONS", "/Users", 405), ("PROPFIND", "/Users", 405),
        ("DELETE", "/Users", 405), ("PUT", "/Users", 405), ("PATCH", "/Users", 405),
        ("POST", user, 405), ("POST", "/ServiceProviderConfig", 405), ("DELETE", "/Schemas", 405),
        ("GET", "/Bulk", 405), ("PUT", "/Bulk", 405), ("GET", "/Me", 404),
        ("GET", f"{user}/extra", 404), ("GET", "/Users/.search", 404), ("GET", "/users", 404),
        ("GET", "/../../../etc/passwd", 404), ("GET", "/Users/%2e%2e%2f%2e%2e%2fetc", 404),
        ("GET", "/Users/%00", 404), ("GET", "/Users/%FF%FE", 404),
        ("GET", "/Users/" + "a" * 4000, 404), ("GET", "/Groups/%27%20OR%201=1", 404),
        ("GET", "/Users/00000000-0000-0000-0000-000000000000", 404),
        ("DELETE", "/Groups/not-a-uuid", 404), ("GET", "/Schemas/urn:nope", 404),
        ("GET", "/ResourceTypes/Nope", 404),
    ]  # fmt: skip
    before = await snapshot(target.pool)
    anonymous = Hostile(target.http.client, None, target.figures)
    for method, path, status in probes:
        reply = await target.http.send(method, path)
        expect(reply, status, None)
        if status == 405:
            assert reply.headers.get("Allow"), (method, path)
        refused = await anonymous.send(method, path)
        assert refused.status in (status, 401), (method, path, refused.status)
        scim_error(refused)
    for raw in ("FOO", "GETT"):
        reply = await target.http.send(raw, "/Users")
        expect(reply, 400, None, "not valid HTTP/1.1")
    for method, path, headers, status in (
        ("GET", "/Users?filter=" + "a" * 9000, {}, 414),
        ("GET", "/Users", {"X-Padding": "a" * 9000}, 431),
    ):
        reply = await target.http.send(method, path, headers=headers)
        expect(reply, status, None, "longer than 8192 bytes")
    assert await snapshot(target.pool) == before
    target.extra["probes"] = len(probes)
