"""Issue #17 item 4: `members[].$ref` on groups and `groups[].$ref` on users
(RFC 7643 §4.1.2, §4.2), from the public base URL as meta.location is;
`display` stays the current name; projection applies to them."""

from __future__ import annotations

from typing import Any

from tests.gateway.support import BASE, ScimHttp, okta_user


async def setup(scim: ScimHttp) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    ada = (await scim.post("/Users", okta_user("ada@initech.example", displayName="Ada"))).body
    bob = (await scim.post("/Users", okta_user("bob@initech.example", displayName="Bob"))).body
    group = await scim.post(
        "/Groups",
        {
            "displayName": "Staff",
            # a client's $ref is not ours to keep: the answer carries our own
            "members": [
                {"value": ada["id"], "$ref": "https://elsewhere.example/Users/x"},
                {"value": bob["id"]},
            ],
        },
    )
    assert group.status == 201, group.text
    return ada, bob, group.body


def by_value(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["value"]: e for e in entries}


async def test_members_and_groups_carry_their_public_url(scim: ScimHttp) -> None:
    ada, bob, group = await setup(scim)
    members = by_value(group["members"])
    assert members[ada["id"]] == {
        "value": ada["id"],
        "$ref": f"{BASE}/Users/{ada['id']}",
        "display": "Ada",
        "type": "User",
    }
    assert members[bob["id"]]["$ref"] == f"{BASE}/Users/{bob['id']}"
    # the same URL the member's own meta.location and Location give
    assert members[ada["id"]]["$ref"] == ada["meta"]["location"]
    got = await scim.get(f"/Groups/{group['id']}")
    assert by_value(got.body["members"]) == members

    user = (await scim.get(f"/Users/{ada['id']}")).body
    assert user["groups"] == [
        {
            "value": group["id"],
            "$ref": f"{BASE}/Groups/{group['id']}",
            "display": "Staff",
            "type": "direct",
        }
    ]
    assert user["groups"][0]["$ref"] == group["meta"]["location"]

    # pages carry them too
    (listed,) = (await scim.get("/Groups")).assert_list()
    assert by_value(listed["members"]) == members
    users = {u["id"]: u for u in (await scim.get("/Users")).assert_list()}
    assert users[bob["id"]]["groups"][0]["$ref"] == f"{BASE}/Groups/{group['id']}"
    searched = await scim.post("/Users/.search", {"filter": f'id eq "{ada["id"]}"'})
    assert searched.assert_list()[0]["groups"] == user["groups"]


async def test_display_follows_renames_and_writes_answer_with_refs(scim: ScimHttp) -> None:
    ada, bob, group = await setup(scim)
    rename = {"op": "replace", "path": "displayName", "value": "Ada Lovelace"}
    assert (await scim.patch(f"/Users/{ada['id']}", rename)).status == 200
    members = by_value((await scim.get(f"/Groups/{group['id']}")).body["members"])
    assert members[ada["id"]]["display"] == "Ada Lovelace"
    assert members[ada["id"]]["$ref"] == f"{BASE}/Users/{ada['id']}"

    rename_group = {"op": "replace", "path": "displayName", "value": "Crew"}
    shown = await scim.patch(f"/Groups/{group['id']}?attributes=members", rename_group)
    assert shown.status == 200 and by_value(shown.body["members"]) == members
    patched = await scim.patch(
        f"/Users/{bob['id']}", {"op": "replace", "path": "title", "value": "x"}
    )
    assert patched.body["groups"][0] == {
        "value": group["id"],
        "$ref": f"{BASE}/Groups/{group['id']}",
        "display": "Crew",
        "type": "direct",
    }
    put = await scim.put(
        f"/Groups/{group['id']}", {"displayName": "Crew", "members": [{"value": bob["id"]}]}
    )
    assert [m["$ref"] for m in put.body["members"]] == [f"{BASE}/Users/{bob['id']}"]


async def test_projection_of_references(scim: ScimHttp) -> None:
    ada, _, group = await setup(scim)
    path = f"/Groups/{group['id']}"
    only_values = (await scim.get(f"{path}?attributes=members.value")).body
    assert all(set(m) == {"value"} for m in only_values["members"])
    only_refs = (await scim.get(f"{path}?attributes=members.$ref")).body
    assert sorted(m["$ref"] for m in only_refs["members"]) == sorted(
        f"{BASE}/Users/{m['value']}" for m in group["members"]
    )
    assert all(set(m) == {"$ref"} for m in only_refs["members"])
    no_refs = (await scim.get(f"{path}?excludedAttributes=members.$ref")).body
    assert all(set(m) == {"value", "display", "type"} for m in no_refs["members"])
    assert "members" not in (await scim.get(f"{path}?excludedAttributes=members")).body
    user = (await scim.get(f"/Users/{ada['id']}?attributes=groups.$ref,userName")).body
    assert user["groups"] == [{"$ref": f"{BASE}/Groups/{group['id']}"}]
    search = await scim.post(
        "/Groups/.search", {"attributes": ["displayName", "members.$ref"], "count": 1}
    )
    (found,) = search.assert_list()
    assert set(found) == {"schemas", "id", "meta", "displayName", "members"}


async def test_a_filter_on_a_reference_is_refused_clearly(scim: ScimHttp) -> None:
    await setup(scim)
    reply = await scim.get('/Groups?filter=members.$ref eq "x"')
    assert "$ref" in reply.assert_error(400, "invalidFilter")
    reply = await scim.get("/Users?filter=groups.$ref pr")
    reply.assert_error(400, "invalidFilter")
