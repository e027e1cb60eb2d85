"""Users and groups through the real gateway and the real core: the HTTP mapping
of create, read, list, search, replace, patch and delete (RFC 7644 §3)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.gateway.support import (
    BASE,
    ENTERPRISE_URN,
    GROUP_URN,
    SCIM_JSON,
    USER_URN,
    ScimHttp,
    okta_user,
)

# each test that reaches the core through the gateway, over gRPC and in-process
GATEWAY_CORES = ("grpc", "local")

BADGE_URN = "urn:example:params:scim:schemas:extension:badges:2.0:User"
UNKNOWN_ID = "010101001010101011001010101011"  # Okta's SPEC test


async def create_user(scim: ScimHttp, user_name: str, **extra: Any) -> dict[str, Any]:
    reply = await scim.post("/Users", okta_user(user_name, **extra))
    assert reply.status == 201, reply.text
    body: dict[str, Any] = reply.body
    return body


# users


async def test_create_user_is_201_with_location_etag_and_the_full_user(scim: ScimHttp) -> None:
    body = okta_user("test.user@okta.local", title="Engineer")
    body["schemas"].append(ENTERPRISE_URN)
    body[ENTERPRISE_URN] = {"department": "Sales", "employeeNumber": "42"}
    body["schemas"].append(BADGE_URN)
    body[BADGE_URN] = {"badge": 7, "ratio": 0.5}
    reply = await scim.post("/Users", body)
    assert reply.status == 201, reply.text
    assert reply.headers["Content-Type"] == SCIM_JSON
    user = reply.body
    location = f"{BASE}/Users/{user['id']}"
    assert reply.headers["Location"] == location == user["meta"]["location"]
    assert reply.headers["ETag"] == user["meta"]["version"]
    assert user["meta"]["resourceType"] == "User"
    assert user["userName"] == "test.user@okta.local" and user["active"] is True
    assert user["name"] == {"givenName": "Test", "familyName": "User"}
    assert user["emails"][0]["value"] == "test.user@okta.local"
    assert user[ENTERPRISE_URN]["department"] == "Sales"
    assert user[BADGE_URN] == {"badge": 7, "ratio": 0.5}
    assert type(user[BADGE_URN]["badge"]) is int  # not 7.0
    assert "password" not in reply.text and "1mz050nq" not in reply.text

    got = await scim.get(f"/Users/{user['id']}")
    assert got.status == 200 and got.body == user
    assert got.headers["ETag"] == user["meta"]["version"]


async def test_duplicate_user_is_409_uniqueness(scim: ScimHttp) -> None:
    await create_user(scim, "dup@x.example")
    reply = await scim.post("/Users", okta_user("DUP@x.example"))
    reply.assert_error(409, "uniqueness")


async def test_unknown_user_is_404(scim: ScimHttp) -> None:
    for path in (f"/Users/{UNKNOWN_ID}", "/Users/00919288221112222", "/Users/.search"):
        (await scim.get(path)).assert_error(404)


async def test_credential_check_on_an_empty_organisation(scim: ScimHttp) -> None:
    # Okta's "Test API Credentials": exactly this shape, even with no users
    reply = await scim.get("/Users?startIndex=1&count=2")
    assert reply.status == 200
    assert reply.body == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }


async def test_list_pages_and_counts(scim: ScimHttp) -> None:
    ids = [(await create_user(scim, f"page.{i}@x.example"))["id"] for i in range(5)]
    first = await scim.get("/Users?startIndex=1&count=2")
    assert [u["id"] for u in first.assert_list()] == ids[:2]
    assert (first.body["totalResults"], first.body["startIndex"]) == (5, 1)
    last = await scim.get("/Users?startIndex=5&count=2")
    assert [u["id"] for u in last.assert_list()] == ids[4:]
    assert (last.body["totalResults"], last.body["itemsPerPage"]) == (5, 1)
    beyond = await scim.get("/Users?startIndex=101&count=100")
    assert beyond.assert_list() == [] and beyond.body["totalResults"] == 5
    only_total = await scim.get("/Users?count=0")
    assert only_total.assert_list() == [] and only_total.body["totalResults"] == 5
    clamped = await scim.get("/Users?startIndex=-4&count=-1")
    assert clamped.assert_list() == [] and clamped.body["startIndex"] == 1
    every = await scim.get("/Users?aadOptscim062020")
    assert len(every.assert_list()) == 5
    for user in every.body["Resources"]:
        assert user["meta"]["location"] == f"{BASE}/Users/{user['id']}"
        assert "password" not in user


@pytest.mark.parametrize(
    "query",
    [
        "filter=userName%20eq%20%22Test.User%40OKTA.local%22&startIndex=1&count=100",
        "filter=userName+eq+%22test.user%40okta.local%22&startIndex=1&count=100",
        'filter=userName+eq+"TEST.USER%40okta.local"',
    ],
)
async def test_filter_lookup_both_encodings_any_case_and_inactive(
    scim: ScimHttp, query: str
) -> None:
    user = await create_user(scim, "test.user@okta.local", active=False)
    await create_user(scim, "someone.else@okta.local")
    found = (await scim.get(f"/Users?{query}")).assert_list()
    assert [u["id"] for u in found] == [user["id"]] and found[0]["active"] is False


async def test_bad_filter_is_invalid_filter(scim: ScimHttp) -> None:
    (await scim.get("/Users?filter=userName%20eq")).assert_error(400, "invalidFilter")


async def test_bad_paging_values_are_invalid_value(scim: ScimHttp) -> None:
    (await scim.get("/Users?count=ten")).assert_error(400, "invalidValue")
    (await scim.get("/Users?startIndex=1.5")).assert_error(400, "invalidValue")


async def test_search_endpoint(scim: ScimHttp) -> None:
    user = await create_user(scim, "searched@x.example")
    await create_user(scim, "other@x.example")
    request = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'userName eq "searched@x.example"',
        "attributes": ["userName"],
        "startIndex": 1,
        "count": 10,
    }
    reply = await scim.post("/Users/.search", request)
    assert reply.assert_list() == [
        {
            "schemas": [USER_URN],
            "id": user["id"],
            "userName": "searched@x.example",
            "meta": user["meta"],
        }
    ]
    bad = await scim.post("/Users/.search", {"schemas": ["urn:x"], "filter": "x"})
    bad.assert_error(400, "invalidSyntax")


async def test_attributes_and_excluded_attributes(scim: ScimHttp) -> None:
    user = await create_user(scim, "proj@x.example")
    only = await scim.get(f"/Users/{user['id']}?attributes=userName,name.familyName")
    assert only.body == {
        "schemas": [USER_URN],
        "id": user["id"],
        "userName": "proj@x.example",
        "name": {"familyName": "User"},
        "meta": user["meta"],
    }
    without = await scim.get("/Users?excludedAttributes=emails,groups")
    (listed,) = without.assert_list()
    assert "emails" not in listed and "groups" not in listed and listed["userName"]


async def test_replace_with_preconditions(scim: ScimHttp) -> None:
    user = await create_user(scim, "put@x.example")
    path = f"/Users/{user['id']}"
    body = okta_user("put@x.example", id="ignored", title="Lead", meta={"resourceType": "User"})
    reply = await scim.put(path, body, headers={"If-Match": user["meta"]["version"]})
    assert reply.status == 200, reply.text
    assert reply.body["title"] == "Lead" and reply.body["id"] == user["id"]
    assert reply.headers["ETag"] == reply.body["meta"]["version"] != user["meta"]["version"]
    assert reply.body["meta"]["location"] == f"{BASE}{path}"
    stale = await scim.put(path, body, headers={"If-Match": user["meta"]["version"]})
    stale.assert_error(412)
    anything = await scim.put(path, okta_user("put@x.example"), headers={"If-Match": "*"})
    assert anything.status == 200
    (await scim.put(f"/Users/{UNKNOWN_ID}", okta_user("put@x.example"))).assert_error(404)


async def test_patch_returns_the_user(scim: ScimHttp) -> None:
    user = await create_user(scim, "patch@x.example")
    path = f"/Users/{user['id']}"
    reply = await scim.patch(path, {"op": "replace", "value": {"active": False}})
    assert reply.status == 200, reply.text
    assert reply.body["active"] is False and reply.headers["ETag"] == reply.body["meta"]["version"]
    entra = await scim.patch(path, {"op": "Replace", "path": "active", "value": "True"})
    assert entra.status == 200 and entra.body["active"] is True
    stale = await scim.patch(
        path, {"op": "replace", "path": "title", "value": "x"}, headers={"If-Match": 'W/"1"'}
    )
    stale.assert_error(412)
    (await scim.patch(path, {"op": "remove"})).assert_error(400, "noTarget")
    envelope = await scim.request("PATCH", path, json_body={"schemas": [], "ops": []})
    envelope.assert_error(400, "invalidSyntax")


async def test_delete_is_204_then_404(scim: ScimHttp) -> None:
    user = await create_user(scim, "gone@x.example")
    reply = await scim.delete(f"/Users/{user['id']}")
    assert (reply.status, reply.text) == (204, "")
    (await scim.get(f"/Users/{user['id']}")).assert_error(404)
    (await scim.delete(f"/Users/{user['id']}")).assert_error(404)


async def test_organisations_never_see_each_other(scim: ScimHttp, other: ScimHttp) -> None:
    user = await create_user(scim, "private@x.example")
    (await other.get(f"/Users/{user['id']}")).assert_error(404)
    (await other.put(f"/Users/{user['id']}", okta_user("private@x.example"))).assert_error(404)
    (await other.delete(f"/Users/{user['id']}")).assert_error(404)
    assert (await other.get("/Users")).assert_list() == []
    assert (await other.post("/Users", okta_user("private@x.example"))).status == 201


# groups


async def test_groups_with_and_without_members(scim: ScimHttp) -> None:
    alice = await create_user(scim, "alice@x.example")
    bob = await create_user(scim, "bob@x.example")
    reply = await scim.post(
        "/Groups",
        {
            "schemas": [GROUP_URN],
            "displayName": "Engineering",
            "members": [{"value": alice["id"], "display": "alice@x.example"}],
        },
    )
    assert reply.status == 201, reply.text
    group = reply.body
    assert reply.headers["Location"] == f"{BASE}/Groups/{group['id']}" == group["meta"]["location"]
    assert reply.headers["ETag"] == group["meta"]["version"]
    assert [m["value"] for m in group["members"]] == [alice["id"]]
    path = f"/Groups/{group['id']}"

    lean = await scim.get(f"{path}?excludedAttributes=members")
    assert lean.status == 200 and "members" not in lean.body and lean.body["displayName"]
    named = await scim.get(f"{path}?attributes=displayName")
    assert set(named.body) == {"schemas", "id", "meta", "displayName"}
    listed = await scim.get(
        "/Groups?excludedAttributes=members&filter=displayName%20eq%20%22engineering%22"
    )
    assert [g["id"] for g in listed.assert_list()] == [group["id"]]
    assert "members" not in listed.body["Resources"][0]

    added = await scim.patch(
        path, {"op": "add", "path": "members", "value": [{"value": bob["id"]}]}
    )
    assert added.status == 204, added.text  # a group's PATCH: no body unless asked for
    members = (await scim.get(path)).body["members"]
    assert {m["value"] for m in members} == {alice["id"], bob["id"]}
    renamed = await scim.patch(
        f"{path}?excludedAttributes=members",
        {"op": "replace", "value": {"id": group["id"], "displayName": "Eng"}},
    )
    assert renamed.status == 200 and renamed.body["displayName"] == "Eng"
    assert "members" not in renamed.body
    removed = await scim.patch(
        f"{path}?attributes=members", {"op": "remove", "path": f'members[value eq "{alice["id"]}"]'}
    )
    assert [m["value"] for m in removed.body["members"]] == [bob["id"]]

    replaced = await scim.put(path, {"schemas": [GROUP_URN], "displayName": "Eng", "members": []})
    assert replaced.status == 200 and replaced.body.get("members", []) == []
    assert replaced.headers["ETag"] == replaced.body["meta"]["version"]

    (await scim.post("/Groups", {"displayName": "ENG"})).assert_error(409, "uniqueness")
    assert (await scim.delete(path)).status == 204
    (await scim.get(path)).assert_error(404)


async def test_entra_group_create_with_unknown_schema(scim: ScimHttp) -> None:
    reply = await scim.post(
        "/Groups",
        {
            "schemas": [
                GROUP_URN,
                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
            ],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "displayName",
            "meta": {"resourceType": "Group"},
        },
    )
    assert reply.status == 201, reply.text
    assert reply.body["members"] == [] if "members" in reply.body else True
    search = await scim.post(
        "/Groups/.search",
        {"filter": 'externalId eq "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159"', "count": 1},
    )
    assert [g["id"] for g in search.assert_list()] == [reply.body["id"]]
    assert json.loads(search.text)["totalResults"] == 1
