"""/Bulk (RFC 7644 §3.7) through the gateway, the core and PostgreSQL: each
operation behaves as its own request would (statuses, errors, audit, role
changes, rate limit); bulkIds resolve forwards and backwards; circles,
foreign ids, oversized bulks and malformed operations get clear errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.gateway.support import (
    BASE,
    ERROR_URN,
    PATCH_URN,
    ScimHttp,
    gateway,
    gateway_settings,
    okta_user,
)
from tests.support import new_org_with_token
from wando.provisioning.v1 import admin_service_pb2_grpc

# each test that reaches the core through the gateway, over gRPC and in-process
GATEWAY_CORES = ("grpc", "local")

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"


def bulk(*operations: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schemas": [BULK_REQUEST], "Operations": list(operations), **extra}


def post_user(bulk_id: str, user_name: str, **extra: Any) -> dict[str, Any]:
    data = okta_user(user_name, **extra)
    return {"method": "POST", "path": "/Users", "bulkId": bulk_id, "data": data}


def post_group(bulk_id: str, name: str, members: list[str]) -> dict[str, Any]:
    data = {"displayName": name, "members": [{"value": m} for m in members]}
    return {"method": "POST", "path": "/Groups", "bulkId": bulk_id, "data": data}


async def send(scim: ScimHttp, body: Any) -> list[dict[str, Any]]:
    reply = await scim.post("/Bulk", body)
    assert reply.status == 200, reply.text
    assert reply.body["schemas"] == [BULK_RESPONSE]
    results: list[dict[str, Any]] = reply.body["Operations"]
    for result in results:
        assert isinstance(result["status"], str)
        if not result["status"].startswith("2"):
            error = result["response"]
            assert error["schemas"] == [ERROR_URN] and error["status"] == result["status"]
            assert error["detail"]
    return results


async def user_names(scim: ScimHttp) -> set[str]:
    reply = await scim.get("/Users?count=1000")
    return {u["userName"] for u in reply.assert_list()}


async def test_a_bulk_creates_and_changes_with_bulk_ids(scim: ScimHttp, pool: asyncpg.Pool) -> None:
    results = await send(
        scim,
        bulk(
            post_user("ada", "ada@initech.example"),
            post_user("bob", "bob@initech.example"),
            post_group("eng", "Engineering", ["bulkId:ada", "bulkId:bob"]),
            {
                "method": "PATCH",
                "path": "/Users/bulkId:bob",
                "data": {
                    "schemas": [PATCH_URN],
                    "Operations": [{"op": "replace", "path": "active", "value": False}],
                },
            },
            {
                "method": "PUT",
                "path": "/Users/bulkId:ada",
                "version": 'W/"1"',
                "data": okta_user("ada@initech.example", displayName="Ada L."),
            },
            {"method": "DELETE", "path": "/Groups/bulkId:eng"},
        ),
    )
    assert [r["status"] for r in results] == ["201", "201", "201", "200", "200", "204"]
    assert [r.get("bulkId") for r in results[:3]] == ["ada", "bob", "eng"]
    ada_id = results[0]["location"].rsplit("/", 1)[-1]
    assert results[0]["location"] == f"{BASE}/Users/{ada_id}"
    assert results[4]["location"] == results[0]["location"]
    assert results[4]["version"] == 'W/"2"'
    assert results[5]["location"] == results[2]["location"]  # DELETE /Groups/bulkId:eng
    ada = (await scim.get(f"/Users/{ada_id}")).body
    assert ada["displayName"] == "Ada L." and ada["groups"] == []  # the group went
    bob = (await scim.get(results[1]["location"].removeprefix(BASE))).body
    assert bob["active"] is False
    # every operation audited, and the role changes on the stream, as single writes are
    async with pool.acquire() as conn:
        audited = await conn.fetch(
            "SELECT action, resource_type FROM audit_events WHERE actor = 'scim' ORDER BY event_id"
        )
        roles = await conn.fetch("SELECT cause FROM role_changes ORDER BY seq")
    assert [(a["action"], a["resource_type"]) for a in audited] == [
        ("create", "User"),
        ("create", "User"),
        ("create", "Group"),
        ("patch", "User"),
        ("replace", "User"),
        ("delete", "Group"),
    ]
    assert [r["cause"] for r in roles] == ["user created", "user created", "user deactivated"]


async def test_a_reference_to_a_later_post_waits_for_it(scim: ScimHttp) -> None:
    results = await send(
        scim,
        bulk(
            post_group("eng", "Engineering", ["bulkId:ada"]),
            post_user("ada", "ada@initech.example"),
        ),
    )
    assert [(r["bulkId"], r["status"]) for r in results] == [("ada", "201"), ("eng", "201")]
    group = (await scim.get(results[1]["location"].removeprefix(BASE))).body
    assert [m["value"] for m in group["members"]] == [results[0]["location"].rsplit("/", 1)[-1]]


async def test_circular_bulk_ids_are_refused_and_nothing_of_them_runs(scim: ScimHttp) -> None:
    results = await send(
        scim,
        bulk(
            post_user("a", "a@initech.example", nickName="bulkId:b"),
            post_user("b", "b@initech.example", nickName="bulkId:a"),
            post_group("g", "Behind", ["bulkId:a"]),
            # names itself, and an operation that can run
            post_user("self", "self@initech.example", nickName="bulkId:self", title="bulkId:free"),
            post_user("free", "free@initech.example"),
        ),
    )
    by_id = {r["bulkId"]: r for r in results}
    assert by_id["free"]["status"] == "201"
    for name in ("a", "b", "g", "self"):
        assert by_id[name]["status"] == "409", by_id[name]
    assert (
        "circular bulkId references: bulkId:a → bulkId:b → bulkId:a"
        in (by_id["a"]["response"]["detail"])
    )
    assert "bulkId:self → bulkId:self" in by_id["self"]["response"]["detail"]
    assert "waits for bulkId:a" in by_id["g"]["response"]["detail"]
    assert await user_names(scim) == {"free@initech.example"}
    assert (await scim.get("/Groups")).body["totalResults"] == 0


async def test_another_organisations_ids_are_not_found_per_operation(
    scim: ScimHttp, other: ScimHttp
) -> None:
    theirs = (await other.post("/Users", okta_user("theirs@umbrella.example"))).body["id"]
    results = await send(
        scim,
        bulk(
            {"method": "PUT", "path": f"/Users/{theirs}", "data": okta_user("x@initech.example")},
            {"method": "DELETE", "path": f"/Users/{theirs}"},
            {
                "method": "PATCH",
                "path": f"/Users/{theirs}",
                "data": {"schemas": [PATCH_URN], "Operations": [{"op": "remove", "path": "title"}]},
            },
            post_group("g", "Mine", [theirs]),
            post_user("mine", "mine@initech.example"),
        ),
    )
    assert [r["status"] for r in results] == ["404", "404", "404", "400", "201"]
    assert results[0]["location"] == f"{BASE}/Users/{theirs}"
    assert "location" not in results[3]  # a failed POST has none
    assert results[3]["response"]["scimType"] == "invalidValue"  # as a POST /Groups answers
    assert (await other.get(f"/Users/{theirs}")).body["userName"] == "theirs@umbrella.example"


async def test_an_operation_errs_exactly_as_its_own_request(scim: ScimHttp) -> None:
    await scim.post("/Users", okta_user("ada@initech.example"))
    alone = await scim.post("/Users", okta_user("ADA@initech.example"))
    (in_bulk,) = await send(scim, bulk(post_user("again", "ADA@initech.example")))
    assert in_bulk["status"] == str(alone.status) == "409"
    assert in_bulk["response"] == alone.body
    stale = {"method": "PUT", "path": "/Users/x", "version": 'W/"9"', "data": {}}
    ada_id = (await scim.get("/Users")).body["Resources"][0]["id"]
    stale["path"] = f"/Users/{ada_id}"
    stale["data"] = okta_user("ada@initech.example")
    (result,) = await send(scim, bulk(stale))
    assert result["status"] == "412"


async def test_malformed_operations_fail_alone(scim: ScimHttp) -> None:
    results = await send(
        scim,
        bulk(
            {"method": "GET", "path": "/Users", "bulkId": "g"},
            {"method": "POST", "path": "/Widgets", "bulkId": "w", "data": {}},
            {"method": "PUT", "path": "/Users", "data": {}},
            {"method": "POST", "path": "/Users/123", "bulkId": "p", "data": {}},
            {"method": "POST", "path": "/Users", "bulkId": "s", "data": '{"userName": '},
            {"method": "POST", "path": "/Users", "data": okta_user("nobulk@initech.example")},
            {"method": "POST", "path": "/Users", "bulkId": "n", "data": {"name": {}}},
            {"method": "PATCH", "path": "/Users/bulkId:ghost", "data": {}},
            "not an object",
            post_user("ok", "ok@initech.example"),
            post_user("ok", "dup@initech.example"),
        ),
    )
    statuses = [(r["status"], r.get("response", {}).get("scimType")) for r in results]
    assert statuses == [
        ("400", "invalidValue"),  # GET is no bulk method
        ("404", None),  # no such endpoint
        ("405", None),  # as PUT /Users answers
        ("405", None),
        ("400", "invalidSyntax"),  # data is a string, not an object
        ("400", "invalidValue"),  # a POST needs a bulkId
        ("400", "invalidValue"),  # no userName: the core's own validation
        ("400", "invalidValue"),  # names no POST of this bulk
        ("400", "invalidSyntax"),
        ("201", None),
        ("400", "invalidValue"),  # the bulkId is taken
    ]
    assert await user_names(scim) == {"ok@initech.example"}


async def test_fail_on_errors_stops_the_rest(scim: ScimHttp) -> None:
    results = await send(
        scim,
        bulk(
            post_user("a", "a@initech.example"),
            {"method": "DELETE", "path": "/Users/00000000-0000-0000-0000-000000000000"},
            {"method": "DELETE", "path": "/Groups/00000000-0000-0000-0000-000000000000"},
            post_user("b", "b@initech.example"),
            failOnErrors=2,
        ),
    )
    assert [r["status"] for r in results] == ["201", "404", "404"]
    assert await user_names(scim) == {"a@initech.example"}
    (await scim.post("/Bulk", bulk(post_user("c", "c@x"), failOnErrors=0))).assert_error(
        400, "invalidValue"
    )


async def test_whole_request_errors(scim: ScimHttp, anonymous: ScimHttp) -> None:
    (await scim.post("/Bulk", {"schemas": [BULK_REQUEST]})).assert_error(400, "invalidSyntax")
    (await scim.post("/Bulk", bulk())).assert_error(400, "invalidSyntax")
    (await scim.post("/Bulk", {"schemas": ["urn:x"], "Operations": [{}]})).assert_error(
        400, "invalidSyntax"
    )
    reply = await scim.request("POST", "/Bulk", data=b'{"Operations": [', headers={})
    reply.assert_error(400, "invalidSyntax")
    (await anonymous.post("/Bulk", bulk(post_user("a", "a@x")))).assert_error(401)
    bad_token = anonymous.as_token("wando_scim_" + "x" * 49)
    (await bad_token.post("/Bulk", bulk(post_user("a", "a@x")))).assert_error(401)


@pytest.fixture
async def small_gateway(
    core_env: dict[str, str], admin_stub: admin_service_pb2_grpc.AdminServiceStub
) -> AsyncIterator[ScimHttp]:
    """A gateway with small bulk limits and a small rate limit."""
    settings = gateway_settings(
        **core_env,
        WANDO_BULK_MAX_OPERATIONS="3",
        WANDO_BULK_MAX_PAYLOAD_BYTES="4096",
        WANDO_RATE_LIMIT_BURST="4",
        WANDO_RATE_LIMIT_PER_SECOND="0.001",
    )
    _, secret = await new_org_with_token(admin_stub, "tiny")
    async with gateway(settings) as client:
        yield ScimHttp(client, secret)


async def test_oversized_bulks_are_refused_whole(small_gateway: ScimHttp) -> None:
    scim = small_gateway
    four = bulk(*(post_user(f"u{i}", f"u{i}@tiny.example") for i in range(4)))
    detail = (await scim.post("/Bulk", four)).assert_error(413, "tooLarge")
    assert "maxOperations is 3" in detail
    padded = bulk(post_user("big", "big@tiny.example", title="x" * 5000))
    detail = (await scim.post("/Bulk", padded)).assert_error(413, "tooLarge")
    assert "maxPayloadSize (4096 bytes)" in detail

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read, then refused
        yield json.dumps(padded).encode()

    reply = await scim.request("POST", "/Bulk", data=chunks(), headers={})
    reply.assert_error(413, "tooLarge")
    config = (await scim.get("/ServiceProviderConfig")).body
    assert config["bulk"] == {"supported": True, "maxOperations": 3, "maxPayloadSize": 4096}


async def test_each_operation_counts_against_the_rate_limit(small_gateway: ScimHttp) -> None:
    # a burst of 4, charged by the core per call: one GET, then one per operation
    scim = small_gateway
    (await scim.get("/Users")).assert_list()
    results = await send(scim, bulk(*(post_user(f"u{i}", f"u{i}@tiny.example") for i in range(3))))
    assert [r["status"] for r in results] == ["201", "201", "201"]
    results = await send(scim, bulk(post_user("late", "late@tiny.example")))
    assert [r["status"] for r in results] == ["429"]
    assert (await scim.get("/Users")).status == 429
