"""Issue #17 item 7: If-Match (RFC 7644 §3.14, RFC 9110 §13.1.1) takes a list
of entity tags and matches when any does, or `*`; on users and groups, for
PUT, PATCH and DELETE. Writers racing with the same tag: exactly one wins,
on the user's optimistic and locked write paths and on groups."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.gateway.support import Reply, ScimHttp, okta_user

WRITERS = 5


def tags(*versions: int) -> dict[str, str]:
    return {"If-Match": ", ".join(f'W/"{v}"' for v in versions)}


async def version(scim: ScimHttp, path: str) -> int:
    reply = await scim.get(path)
    assert reply.status == 200, reply.text
    return int(reply.headers["ETag"].removeprefix('W/"').removesuffix('"'))


async def test_a_list_of_tags_matches_when_any_does_on_users(scim: ScimHttp) -> None:
    user = (await scim.post("/Users", okta_user("ada@initech.example"))).body
    path = f"/Users/{user['id']}"
    title = {"op": "replace", "path": "title", "value": "Countess"}
    stale = await scim.patch(path, title, headers=tags(7, 8))
    assert "changed since version" in stale.assert_error(412)
    assert await version(scim, path) == 1
    assert (await scim.patch(path, title, headers=tags(7, 1))).status == 200
    assert (await scim.patch(path, title, headers={"If-Match": '"9", "2"'})).status == 200
    body = okta_user("ada@initech.example", title="Lady")
    assert (await scim.put(path, body, headers=tags(1))).status == 412  # now at 2
    assert (await scim.put(path, body, headers={"If-Match": 'W/"x,2", W/"2"'})).status == 200
    # DELETE: a stale list is refused and deletes nothing; one current tag suffices
    assert (await scim.delete(path, headers=tags(1, 2))).assert_error(412)
    assert (await scim.get(path)).status == 200
    assert (await scim.delete(path, headers=tags(1, 2, 3))).status == 204
    assert (await scim.get(path)).status == 404


async def test_if_match_on_group_put_patch_and_delete(scim: ScimHttp) -> None:
    ada = (await scim.post("/Users", okta_user("ada@initech.example"))).body
    group = (await scim.post("/Groups", {"displayName": "Staff"})).body
    path = f"/Groups/{group['id']}"
    add = {"op": "add", "path": "members", "value": [{"value": ada["id"]}]}
    # PATCH, quiet (204 with ETag) and with a representation
    assert (await scim.patch(path, add, headers=tags(2))).assert_error(412)
    quiet = await scim.patch(path, add, headers=tags(3, 1))
    assert quiet.status == 204 and quiet.headers["ETag"] == 'W/"2"'
    rename = {"op": "replace", "path": "displayName", "value": "Crew"}
    stale = await scim.patch(f"{path}?attributes=displayName", rename, headers=tags(1))
    assert "changed since version" in stale.assert_error(412)
    shown = await scim.patch(f"{path}?attributes=displayName", rename, headers=tags(1, 2))
    assert shown.status == 200 and shown.body["displayName"] == "Crew"
    # PUT
    body = {"displayName": "Team", "members": [{"value": ada["id"]}]}
    assert (await scim.put(path, body, headers=tags(1, 2))).assert_error(412)
    assert (await scim.get(path)).body["displayName"] == "Crew"
    put = await scim.put(path, body, headers={"If-Match": '"3"'})
    assert put.status == 200 and put.headers["ETag"] == 'W/"4"'
    assert (await scim.put(path, body, headers={"If-Match": "*"})).status == 200
    # DELETE
    assert (await scim.delete(path, headers=tags(3))).assert_error(412)
    kept = await scim.get(path)
    assert kept.status == 200 and [m["value"] for m in kept.body["members"]] == [ada["id"]]
    assert (await scim.delete(path, headers=tags(3, 4))).status == 204
    assert (await scim.delete(path, headers=tags(4))).assert_error(404)


@pytest.mark.parametrize(
    "header",
    ['W/"1" W/"2"', 'W/"', 'W/"1', '""', ",,", 'W/"1"x'],
)
async def test_malformed_if_match_matches_nothing(scim: ScimHttp, header: str) -> None:
    user = (await scim.post("/Users", okta_user("bob@initech.example"))).body
    path = f"/Users/{user['id']}"
    reply = await scim.patch(
        path, {"op": "replace", "path": "title", "value": "x"}, headers={"If-Match": header}
    )
    reply.assert_error(412)
    assert await version(scim, path) == 1


async def race(writes: list[Any]) -> list[Reply]:
    return list(await asyncio.gather(*writes))


def one_winner(replies: list[Reply], won: int) -> None:
    statuses = sorted(r.status for r in replies)
    assert statuses == [won] + [412] * (len(replies) - 1), [(r.status, r.text) for r in replies]
    for reply in replies:
        if reply.status == 412:
            reply.assert_error(412)


async def test_users_racing_with_one_tag_on_the_optimistic_path(scim: ScimHttp) -> None:
    """A change of `title` cannot move a role: an optimistic conditional write."""
    user = (await scim.post("/Users", okta_user("cy@initech.example"))).body
    path = f"/Users/{user['id']}"
    for round_ in range(3):
        tag = await version(scim, path)
        writes = [
            scim.patch(
                path,
                {"op": "replace", "path": "title", "value": f"t{round_}-{n}"},
                headers=tags(tag),
            )
            for n in range(WRITERS)
        ]
        replies = await race(writes)
        one_winner(replies, 200)
        (winner,) = [r for r in replies if r.status == 200]
        assert await version(scim, path) == tag + 1
        assert (await scim.get(path)).body["title"] == winner.body["title"]


async def test_users_racing_with_one_tag_on_the_locked_path(scim: ScimHttp) -> None:
    """(De)activation and role values can move a role: written under the row lock."""
    user = (await scim.post("/Users", okta_user("dee@initech.example"))).body
    path = f"/Users/{user['id']}"
    for round_ in range(3):
        tag = await version(scim, path)
        writes = [
            scim.patch(
                path,
                {"op": "replace", "path": "roles", "value": [{"value": f"r{round_}-{n}"}]},
                {"op": "replace", "path": "active", "value": round_ % 2 == 1},
                headers=tags(tag),
            )
            for n in range(WRITERS)
        ]
        replies = await race(writes)
        one_winner(replies, 200)
        (winner,) = [r for r in replies if r.status == 200]
        now = (await scim.get(path)).body
        assert await version(scim, path) == tag + 1
        assert now["roles"] == winner.body["roles"] and now["active"] is (round_ % 2 == 1)


async def test_groups_racing_with_one_tag(scim: ScimHttp) -> None:
    users = [
        (await scim.post("/Users", okta_user(f"u{n}@initech.example"))).body for n in range(WRITERS)
    ]
    group = (await scim.post("/Groups", {"displayName": "Racers"})).body
    path = f"/Groups/{group['id']}"
    tag = await version(scim, path)
    adds = [
        scim.patch(
            path, {"op": "add", "path": "members", "value": [{"value": u["id"]}]}, headers=tags(tag)
        )
        for u in users
    ]
    one_winner(await race(adds), 204)
    assert len((await scim.get(path)).body["members"]) == 1
    tag += 1
    puts = [
        scim.put(path, {"displayName": f"Racers {n}", "members": []}, headers=tags(tag))
        for n in range(WRITERS)
    ]
    one_winner(await race(puts), 200)
    assert (await scim.get(path)).body["members"] == []
    tag += 1
    deletes = [scim.delete(path, headers=tags(tag)) for _ in range(WRITERS)]
    replies = await race(deletes)
    # the first delete wins; the others find the group gone (404) or changed (412)
    assert sorted(r.status for r in replies)[0] == 204
    assert [r.status for r in replies].count(204) == 1
    assert (await scim.get(path)).status == 404
