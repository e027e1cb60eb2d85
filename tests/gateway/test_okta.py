"""Okta, replayed through the real gateway, core and PostgreSQL (issue #4, item 7;
shared/reference/idp-scim-traffic.md §1 and §3.1): the App Integration Wizard
flows (GET + PUT), the catalog-app PATCHes, import paging, the twelve checks of
Okta's SCIM 2.0 SPEC test, and organisations kept apart."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc

from tests.gateway.support import (
    ENTERPRISE_URN,
    ERROR_URN,
    GROUP_URN,
    LIST_URN,
    USER_URN,
    ScimHttp,
    okta_user,
)
from tests.scim_client import Scim

# each test that reaches the core through the gateway, over gRPC and in-process
GATEWAY_CORES = ("grpc", "local")

ENCODINGS = (
    "filter=userName%20eq%20%22{}%22&startIndex=1&count=100",  # today's Okta
    "filter=userName+eq+%22{}%22&startIndex=1&count=100",  # Okta's 2018 guide
)


def quoted(value: str) -> str:
    return value.replace("@", "%40")


async def lookup(scim: ScimHttp, user_name: str) -> list[dict[str, Any]]:
    """Okta's pre-create lookup, sent both ways; both must agree."""
    results = []
    for encoding in ENCODINGS:
        reply = await scim.get("/Users?" + encoding.format(quoted(user_name)))
        results.append(reply.assert_list())
    assert results[0] == results[1]
    return results[0]


async def group_lookup(scim: ScimHttp, name: str) -> list[dict[str, Any]]:
    reply = await scim.get(
        f"/Groups?filter=displayName%20eq%20%22{name.replace(' ', '%20')}%22&startIndex=1&count=100"
    )
    return reply.assert_list()


def okta_put_body(user: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """What an AIW app PUTs: its whole view of the app profile (§1.2 (5))."""
    body = {
        "schemas": [USER_URN],
        "id": user["id"],
        "userName": user["userName"],
        "name": dict(user["name"]),
        "emails": [dict(e, display=e["value"]) for e in user["emails"]],
        "active": True,
        "groups": [],
        "password": "1mz050nq",
        "meta": {"resourceType": "User", "created": "04-12-2018 00:00:00"},
    }
    body.update(changes)
    return body


def member_ids(group: dict[str, Any]) -> set[str]:
    return {m["value"] for m in group.get("members") or []}


async def test_test_api_credentials_on_empty_and_non_empty_organisations(scim: ScimHttp) -> None:
    empty = await scim.get("/Users?startIndex=1&count=2")
    assert empty.body == {
        "schemas": [LIST_URN],
        "totalResults": 0,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }
    assert (await scim.get("/ServiceProviderConfig")).status == 200
    for i in range(3):
        assert (await scim.post("/Users", okta_user(f"seed.{i}@okta.local"))).status == 201
    seeded = await scim.get("/Users?startIndex=1&count=2")
    assert len(seeded.assert_list()) == 2
    assert (seeded.body["totalResults"], seeded.body["itemsPerPage"]) == (3, 2)


async def test_import_pages_through_a_few_hundred_users(
    scim: ScimHttp, channel: grpc.aio.Channel
) -> None:
    assert scim.token
    grpc_scim = Scim(channel, scim.token)  # seed straight through the core: fast, unthrottled
    names = [f"import.{i:03d}@okta.local" for i in range(250)]
    for start in range(0, len(names), 25):
        await asyncio.gather(
            *(grpc_scim.create_user(okta_user(n)) for n in names[start : start + 25])
        )
    seen: list[str] = []
    start_index = 1
    while True:
        reply = await scim.get(f"/Users?startIndex={start_index}&count=100")
        page = reply.assert_list()
        assert reply.body["totalResults"] == 250 and reply.body["startIndex"] == start_index
        seen.extend(user["userName"] for user in page)
        if start_index + len(page) > reply.body["totalResults"] or not page:
            break
        start_index += 100
    assert reply.body["itemsPerPage"] == 50  # the last page: what was returned, not count
    assert sorted(seen) == sorted(names) and len(set(seen)) == 250
    again = [
        u["userName"] for u in (await scim.get("/Users?startIndex=101&count=100")).body["Resources"]
    ]
    assert again == seen[100:200]  # stable order across reads
    assert (await scim.get("/Users?startIndex=301&count=100")).assert_list() == []


async def test_user_lifecycle_as_an_aiw_app(scim: ScimHttp) -> None:
    # (3a) lookup, (3b) create with Okta's body
    assert await lookup(scim, "test.user@okta.local") == []
    body = okta_user("test.user@okta.local", title="Engineer", userType="Employee")
    body["schemas"].append(ENTERPRISE_URN)
    body[ENTERPRISE_URN] = {"department": "Sales"}
    created = await scim.post("/Users", body)
    assert created.status == 201, created.text
    user = created.body
    assert user["id"] and user["userName"] == "test.user@okta.local" and user["active"] is True
    assert user["name"] == body["name"] and user["emails"][0]["value"] == body["emails"][0]["value"]
    assert user["meta"]["resourceType"] == "User" and user[ENTERPRISE_URN]["department"] == "Sales"
    assert "password" not in created.text and "1mz050nq" not in created.text
    path = f"/Users/{user['id']}"

    # a second create with the same userName, in another case, is 409 uniqueness
    (await scim.post("/Users", okta_user("TEST.USER@okta.local"))).assert_error(409, "uniqueness")
    assert [u["id"] for u in await lookup(scim, "Test.User@OKTA.local")] == [user["id"]]

    # membership that profile updates must not drop (Okta PUTs "groups": [])
    group = await scim.post(
        "/Groups",
        {"schemas": [GROUP_URN], "displayName": "Sales", "members": [{"value": user["id"]}]},
    )
    assert group.status == 201, group.text

    # (5) profile update: GET then PUT the whole profile
    current = (await scim.get(path)).body
    name = {"givenName": "Another", "middleName": "Excited", "familyName": "User"}
    updated = await scim.put(path, okta_put_body(current, name=name))
    assert updated.status == 200, updated.text
    assert updated.body["name"] == name
    assert [g["value"] for g in updated.body["groups"]] == [group.body["id"]]
    assert member_ids((await scim.get(f"/Groups/{group.body['id']}")).body) == {user["id"]}
    assert "password" not in updated.text

    # (6) deactivate: GET then PUT with active false; still readable and findable
    current = (await scim.get(path)).body
    assert (await scim.put(path, okta_put_body(current, active=False))).body["active"] is False
    assert (await scim.get(path)).body["active"] is False
    (found,) = await lookup(scim, "test.user@okta.local")
    assert found["id"] == user["id"] and found["active"] is False
    listed = (await scim.get("/Users?startIndex=1&count=100")).assert_list()
    assert [u["active"] for u in listed] == [False]

    # (7) reactivate the same way
    current = (await scim.get(path)).body
    assert (await scim.put(path, okta_put_body(current, active=True))).body["active"] is True
    assert [g["value"] for g in (await scim.get(path)).body["groups"]] == [group.body["id"]]


async def test_deactivate_and_reactivate_as_a_catalog_app(scim: ScimHttp) -> None:
    user = (await scim.post("/Users", okta_user("oin.user@okta.local"))).body
    path = f"/Users/{user['id']}"
    for active in (False, True, False):
        reply = await scim.patch(path, {"op": "replace", "value": {"active": active}})
        assert reply.status == 200, reply.text
        assert reply.body["active"] is active
        assert reply.body["emails"] == user["emails"]  # a path-less replace is not a PUT
    assert (await scim.get(path)).body["active"] is False
    assert (await lookup(scim, "oin.user@okta.local"))[0]["active"] is False


async def test_push_groups_as_an_aiw_app(scim: ScimHttp) -> None:
    alice = (await scim.post("/Users", okta_user("alice@okta.local"))).body
    bob = (await scim.post("/Users", okta_user("bob@okta.local"))).body

    # (8a) lookup by name, (8b) create without members
    assert await group_lookup(scim, "Test SCIMv2") == []
    created = await scim.post(
        "/Groups", {"schemas": [GROUP_URN], "displayName": "Test SCIMv2", "members": []}
    )
    assert created.status == 201, created.text
    group = created.body
    assert group["id"] and group["displayName"] == "Test SCIMv2"
    assert group["meta"]["resourceType"] == "Group" and member_ids(group) == set()
    path = f"/Groups/{group['id']}"
    assert [g["id"] for g in await group_lookup(scim, "test scimv2")] == [group["id"]]

    # (8c) GET, then PUT the full member list
    current = (await scim.get(path)).body
    full = [
        {"value": alice["id"], "display": "alice@okta.local"},
        {"value": bob["id"], "display": "bob@okta.local"},
    ]
    put = await scim.put(path, {**current, "members": full})
    assert put.status == 200, put.text
    assert member_ids(put.body) == {alice["id"], bob["id"]}

    # (9) rename by PUT, members sent again as they are
    renamed = await scim.put(
        path,
        {"schemas": [GROUP_URN], "id": group["id"], "displayName": "New name", "members": full},
    )
    assert renamed.body["displayName"] == "New name"
    assert member_ids(renamed.body) == {alice["id"], bob["id"]}

    # (10) membership by PUT: drop bob, then empty the group
    only_alice = await scim.put(
        path, {"schemas": [GROUP_URN], "displayName": "New name", "members": full[:1]}
    )
    assert member_ids(only_alice.body) == {alice["id"]}
    assert (await scim.get(f"/Users/{bob['id']}")).body["groups"] == []
    emptied = await scim.put(
        path, {"schemas": [GROUP_URN], "displayName": "New name", "members": []}
    )
    assert member_ids(emptied.body) == set()

    # a create that already carries members (the 2018 Group Push guide)
    with_members = await scim.post("/Groups", {"displayName": "Pushed", "members": full})
    assert with_members.status == 201 and member_ids(with_members.body) == {alice["id"], bob["id"]}

    # (11) unlink with "Delete the group in the target app"
    assert (await scim.delete(path)).status == 204
    (await scim.get(path)).assert_error(404)
    assert (await scim.get(f"/Groups/{with_members.body['id']}")).status == 200


async def test_push_groups_as_a_catalog_app(scim: ScimHttp) -> None:
    users = [(await scim.post("/Users", okta_user(f"m{i}@okta.local"))).body for i in range(3)]
    ids = [u["id"] for u in users]
    group = (await scim.post("/Groups", {"displayName": "OIN group"})).body
    path = f"/Groups/{group['id']}"

    # a group's PATCH answers 204 (reference §2.4: Okta takes 200 or 204), with its version
    added = await scim.patch(
        path,
        {"op": "add", "path": "members", "value": [{"value": i, "display": "x"} for i in ids]},
    )
    assert added.status == 204 and added.text == "", added.text
    assert added.headers["ETag"] == (await scim.get(path)).headers["ETag"]
    assert member_ids((await scim.get(path)).body) == set(ids)

    # (9) rename with a path-less replace of {id, displayName}: members untouched, idempotent
    for _ in range(2):
        renamed = await scim.patch(
            path, {"op": "replace", "value": {"id": group["id"], "displayName": "Renamed"}}
        )
        assert renamed.status == 204, renamed.text
        now = (await scim.get(path)).body
        assert now["displayName"] == "Renamed" and member_ids(now) == set(ids)

    # (10) several removes by value filter, then one add, in one request
    changed = await scim.patch(
        path,
        {"op": "remove", "path": f'members[value eq "{ids[0]}"]'},
        {"op": "remove", "path": f'members[value eq "{ids[1]}"]'},
        {"op": "add", "path": "members", "value": [{"value": ids[0]}]},
    )
    assert changed.status == 204
    assert member_ids((await scim.get(path)).body) == {ids[0], ids[2]}

    # a client that asks for a representation gets one
    shown = await scim.patch(
        f"{path}?attributes=displayName,members",
        {"op": "add", "path": "members", "value": [{"value": ids[1]}]},
    )
    assert shown.status == 200 and member_ids(shown.body) == set(ids)
    assert shown.body["displayName"] == "Renamed"
    counted = await scim.patch(
        f"{path}?excludedAttributes=members",
        {"op": "remove", "path": f'members[value eq "{ids[1]}"]'},
    )
    assert counted.status == 200 and "members" not in counted.body

    # "Push now" of an empty group
    emptied = await scim.patch(path, {"op": "replace", "path": "members", "value": []})
    assert emptied.status == 204 and member_ids((await scim.get(path)).body) == set()
    assert (await scim.delete(path)).status == 204
    (await scim.get(path)).assert_error(404)


async def test_okta_spec_test(scim: ScimHttp) -> None:
    """The twelve steps of Okta's "SCIM 2.0 SPEC Test" (reference §3.1), with its assertions."""
    spec = scim.as_token(None)
    auth = {"Authorization": f"Bearer {scim.token}", "User-Agent": "OKTA SCIM Integration"}
    seed = okta_user("seed.user@atko.com")
    assert (await scim.post("/Users", seed)).status == 201

    # 1. Test Users endpoint
    first = await spec.get("/Users?count=1&startIndex=1", headers=auth)
    (listed,) = first.assert_list()
    for key in ("id", "userName", "active"):
        assert listed[key] not in (None, "")
    assert listed["name"]["familyName"] and listed["name"]["givenName"]
    assert listed["emails"][0]["value"]
    # 2. Get Users/{id}
    second = await spec.get(f"/Users/{listed['id']}", headers=auth)
    assert second.status == 200 and second.body["id"] == listed["id"]
    assert second.body["name"]["familyName"] and second.body["emails"][0]["value"]
    # 3. Test invalid User by username
    third = await spec.get('/Users?filter=userName eq "abcdefgh@atko.com"', headers=auth)
    assert third.assert_list() == [] and third.body["totalResults"] == 0
    # 4. Test invalid User by ID
    (await spec.get("/Users/010101001010101011001010101011", headers=auth)).assert_error(404)
    # 5. Make sure random user doesn't exist
    email = "Runscope123Abcdefghi456@atko.com"
    fifth = await spec.get(f'/Users?filter=userName eq "{email}"', headers=auth)
    assert fifth.body["totalResults"] == 0 and fifth.body["schemas"] == [LIST_URN]
    # 6. Create Okta user with realistic values (Content-Type application/json, no User-Agent)
    body = {
        "schemas": [USER_URN],
        "userName": email,
        "name": {"givenName": "Runscope123", "familyName": "Abcdefghi456"},
        "emails": [{"primary": True, "value": email, "type": "work"}],
        "displayName": "Runscope123 Abcdefghi456",
        "active": True,
    }
    six_headers = {
        "Authorization": auth["Authorization"],
        "Content-Type": "application/json",
        "Accept": "application/scim+json; charset=utf-8",
        "User-Agent": None,
    }
    sixth = await spec.request(
        "POST",
        "/Users",
        data=json.dumps(body).encode(),
        headers=six_headers,
    )
    assert sixth.status == 201, sixth.text
    assert sixth.body["active"] is True and sixth.body["id"]
    assert sixth.body["name"]["familyName"] == "Abcdefghi456"
    assert sixth.body["name"]["givenName"] == "Runscope123"
    assert USER_URN in sixth.body["schemas"] and sixth.body["userName"] == email
    # 7. Verify that user was created
    seventh = await spec.get(f"/Users/{sixth.body['id']}", headers=auth)
    assert seventh.status == 200 and seventh.body["userName"] == email
    assert seventh.body["name"] == body["name"]
    # 8. Expect failure when recreating user with same values
    again = dict(body, emails=[{"primary": True, "value": email, "type": "work"}])
    eighth = await spec.request(
        "POST",
        "/Users",
        data=json.dumps(again).encode(),
        headers=six_headers,
    )
    assert eighth.status == 409
    # 9. Username Case Sensitivity Check
    ninth = await spec.get(f'/Users?filter=userName eq "{email.upper()}"', headers=auth)
    assert [u["id"] for u in ninth.assert_list()] == [sixth.body["id"]]
    # 10. Optional: Verify Groups endpoint, well under 600 ms
    started = time.perf_counter()
    tenth = await spec.get("/Groups", headers=auth)
    assert time.perf_counter() - started < 0.6
    assert isinstance(tenth.assert_list(), list)
    # 11. Check status 401
    eleventh = await spec.get(
        f'/Users?filter=userName eq "{email.upper()}"', headers={"Authorization": "non-token"}
    )
    eleventh.assert_error(401)
    assert eleventh.body["schemas"] == [ERROR_URN] and eleventh.body["status"] == "401"
    # 12. Check status 404
    twelfth = await spec.get("/Users/00919288221112222", headers=auth)
    twelfth.assert_error(404)
    assert twelfth.body["status"] == "404"


async def test_one_organisation_never_sees_or_changes_another(
    scim: ScimHttp, other: ScimHttp
) -> None:
    user = (await scim.post("/Users", okta_user("private@okta.local"))).body
    group = (
        await scim.post("/Groups", {"displayName": "Private", "members": [{"value": user["id"]}]})
    ).body
    users, groups = f"/Users/{user['id']}", f"/Groups/{group['id']}"

    assert await lookup(other, "private@okta.local") == []
    assert await group_lookup(other, "Private") == []
    assert (await other.get("/Users")).assert_list() == []
    assert (await other.get("/Groups")).assert_list() == []
    for path in (users, groups):
        (await other.get(path)).assert_error(404)
        (await other.patch(path, {"op": "replace", "value": {"active": False}})).assert_error(404)
        (await other.delete(path)).assert_error(404)
    (await other.put(users, okta_user("private@okta.local", active=False))).assert_error(404)
    (await other.put(groups, {"displayName": "Stolen", "members": []})).assert_error(404)
    refused = await other.post(
        "/Groups", {"displayName": "Mine", "members": [{"value": user["id"]}]}
    )
    assert refused.status == 400  # not a user of that organisation

    # the same names are free in the other organisation
    assert (await other.post("/Users", okta_user("private@okta.local"))).status == 201
    assert (await other.post("/Groups", {"displayName": "Private"})).status == 201

    # and nothing of the first changed
    assert (await scim.get(users)).body["active"] is True
    kept = (await scim.get(groups)).body
    assert kept["displayName"] == "Private" and member_ids(kept) == {user["id"]}
