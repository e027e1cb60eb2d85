"""Groups and memberships in the core: SCIM semantics, O(change) writes, concurrency."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import grpc

from tests.scim_client import Scim, fails, okta_user, ops, reason
from wando.provisioning.v1 import error_pb2, scim_pb2
from wando.provisioning.v1 import group_service_pb2 as gpb


async def users(scim: Scim, n: int, prefix: str = "m") -> list[str]:
    return [(await scim.create_user(okta_user(f"{prefix}{i}@x.example")))["id"] for i in range(n)]


def member_ids(group: dict) -> list[str]:  # type: ignore[type-arg]
    return sorted(m["value"] for m in group.get("members", []))


async def test_create_with_and_without_members(acme: Scim) -> None:
    ids = await users(acme, 2)
    empty = await acme.create_group(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Test SCIMv2",
            "members": [],
        }
    )
    assert empty["members"] == [] and empty["meta"]["resourceType"] == "Group"
    full = await acme.create_group(
        {"displayName": "Full", "members": [{"value": i, "display": "x"} for i in ids]}
    )
    assert member_ids(full) == sorted(ids)
    assert (await acme.get_user(ids[0]))["groups"][0]["value"] == full["id"]
    error = await fails(acme.create_group({"displayName": "full"}), grpc.StatusCode.ALREADY_EXISTS)
    assert reason(error) == error_pb2.ERROR_REASON_UNIQUENESS


async def test_members_are_listed_in_the_order_they_were_sent(acme: Scim) -> None:
    ids = await users(acme, 6, prefix="ordered")
    sent = [ids[i] for i in (4, 1, 5, 0, 3)]
    group = await acme.create_group(
        {"displayName": "Ordered", "members": [{"value": i} for i in sent]}
    )
    assert [m["value"] for m in group["members"]] == sent
    # a full list that adds one keeps the others where they were, the new one last
    replaced = await acme.replace_group(
        group["id"], {"displayName": "Ordered", "members": [{"value": i} for i in [ids[2], *sent]]}
    )
    assert [m["value"] for m in replaced["members"]] == [*sent, ids[2]]


async def test_entra_group_schema_urn_is_tolerated(acme: Scim) -> None:
    group = await acme.create_group(
        {
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:Group",
                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
            ],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "displayName",
            "meta": {"resourceType": "Group"},
        }
    )
    assert group["externalId"] == "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159"
    assert group["members"] == []


async def test_unknown_member_is_named_and_nothing_is_applied(acme: Scim, globex: Scim) -> None:
    ids = await users(acme, 1)
    stranger = (await globex.create_user(okta_user("stranger@x.example")))["id"]
    for bad in (stranger, "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        error = await fails(
            acme.create_group(
                {"displayName": f"G {bad}", "members": [{"value": ids[0]}, {"value": bad}]}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert bad in (error.details() or "")
    _, total, _ = await acme.list_groups()
    assert total == 0
    group = await acme.create_group({"displayName": "Real", "members": [{"value": ids[0]}]})
    await fails(
        acme.patch_group(
            group["id"], {"op": "add", "path": "members", "value": [{"value": stranger}]}
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await fails(
        acme.replace_group(
            group["id"], {"displayName": "Renamed", "members": [{"value": stranger}]}
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    after = await acme.get_group(group["id"])
    assert after["displayName"] == "Real" and member_ids(after) == ids


async def test_okta_put_with_full_list_writes_only_the_difference(
    acme: Scim, pool: asyncpg.Pool
) -> None:
    ids = await users(acme, 6)
    group = await acme.create_group(
        {"displayName": "Eng", "members": [{"value": i} for i in ids[:5]]}
    )
    async with pool.acquire() as conn:
        before = dict(await conn.fetch("SELECT user_id::text, xmin::text FROM group_members"))
    wanted = ids[1:6]  # drop ids[0], add ids[5]
    replaced = await acme.replace_group(
        group["id"],
        {
            "id": group["id"],
            "displayName": "Eng",
            "members": [{"value": i, "display": "x"} for i in wanted],
        },
    )
    assert member_ids(replaced) == sorted(wanted)
    async with pool.acquire() as conn:
        after = dict(await conn.fetch("SELECT user_id::text, xmin::text FROM group_members"))
    untouched = set(ids[1:5])
    assert {k: after[k] for k in untouched} == {
        k: before[k] for k in untouched
    }  # rows not rewritten
    assert ids[0] not in after and ids[5] in after


async def test_put_or_patch_without_members_leaves_them(acme: Scim) -> None:
    ids = await users(acme, 3)
    group = await acme.create_group({"displayName": "Old", "members": [{"value": i} for i in ids]})
    renamed = await acme.replace_group(group["id"], {"displayName": "New"})
    assert renamed["displayName"] == "New" and member_ids(renamed) == sorted(ids)
    okta = await acme.patch_group(
        group["id"], {"op": "replace", "value": {"id": group["id"], "displayName": "Newer"}}
    )
    assert okta["displayName"] == "Newer" and member_ids(okta) == sorted(ids)
    entra = await acme.patch_group(
        group["id"], {"op": "Replace", "path": "displayName", "value": "Newest"}
    )
    assert entra["displayName"] == "Newest" and member_ids(entra) == sorted(ids)
    again = await acme.patch_group(
        group["id"], {"op": "replace", "value": {"id": group["id"], "displayName": "Newest"}}
    )
    assert again["meta"]["version"] == entra["meta"]["version"]  # idempotent rename writes nothing


async def test_member_patch_forms(acme: Scim) -> None:
    ids = await users(acme, 5)
    group = await acme.create_group({"displayName": "P", "members": []})
    gid = group["id"]
    out = await acme.patch_group(
        gid,
        {
            "op": "add",
            "path": "members",
            "value": [{"value": ids[0], "display": "a"}, {"value": ids[1]}, {"value": ids[2]}],
        },
    )
    assert member_ids(out) == sorted(ids[:3])
    out = await acme.patch_group(
        gid,
        {"op": "remove", "path": f'members[value eq "{ids[0]}"]'},
        {"op": "add", "path": "members", "value": [{"value": ids[3], "display": "d"}]},
    )
    assert member_ids(out) == sorted([ids[1], ids[2], ids[3]])
    # Entra default dialect: Remove with a value array removes every listed member
    out = await acme.patch_group(
        gid,
        {
            "op": "Remove",
            "path": "members",
            "value": [{"$ref": None, "value": ids[1]}, {"$ref": None, "value": ids[2]}],
        },
    )
    assert member_ids(out) == [ids[3]]
    out = await acme.patch_group(
        gid, {"op": "Add", "path": "members", "value": [{"$ref": None, "value": ids[4]}]}
    )
    assert member_ids(out) == sorted([ids[3], ids[4]])
    # Okta "push now" on an empty group
    out = await acme.patch_group(gid, {"op": "replace", "path": "members", "value": []})
    assert out["members"] == []
    # add and remove of one member in one request (Entra validator P5): the last one wins
    out = await acme.patch_group(
        gid,
        {"op": "add", "path": "members", "value": [{"value": ids[0]}]},
        {"op": "remove", "path": f'members[value eq "{ids[0]}"]'},
    )
    assert out["members"] == []
    # removing someone who is not a member is harmless
    out = await acme.patch_group(gid, {"op": "remove", "path": f'members[value eq "{ids[0]}"]'})
    assert out["members"] == []


async def test_membership_change_bumps_version_and_last_modified(acme: Scim) -> None:
    ids = await users(acme, 1)
    group = await acme.create_group({"displayName": "V"})
    out = await acme.patch_group(
        group["id"], {"op": "add", "path": "members", "value": [{"value": ids[0]}]}
    )
    assert out["meta"]["version"] != group["meta"]["version"]
    assert out["meta"]["lastModified"] > group["meta"]["lastModified"]
    await fails(
        acme.patch_group(
            group["id"],
            {"op": "replace", "path": "members", "value": []},
            etag=group["meta"]["version"],
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_exclude_members(acme: Scim) -> None:
    ids = await users(acme, 2)
    group = await acme.create_group(
        {"displayName": "X", "members": [{"value": i} for i in ids]}, exclude_members=True
    )
    assert "members" not in group
    assert "members" not in await acme.get_group(group["id"], exclude_members=True)
    listed, total, _ = await acme.list_groups(exclude_members=True, filter='displayName eq "x"')
    assert total == 1 and "members" not in listed[0]
    listed, total, _ = await acme.list_groups(filter='displayName eq "x"')
    assert member_ids(listed[0]) == sorted(ids)


async def test_etag_only_patch_answers_with_the_version_alone(acme: Scim) -> None:
    """What the gateway's 204 asks for: the new version, without the group's
    representation or its membership read back."""
    ids = await users(acme, 3)
    group = await acme.create_group({"displayName": "Quiet", "members": [{"value": ids[0]}]})
    request = gpb.PatchGroupRequest(
        id=group["id"],
        operations=ops({"op": "add", "path": "members", "value": [{"value": ids[1]}]}),
        etag_only=True,
    )
    answer = (await acme.groups.PatchGroup(request, metadata=acme.metadata)).group
    now = await acme.get_group(group["id"])
    assert answer.id == group["id"] and answer.etag == now["meta"]["version"] != 'W/"1"'
    assert answer.resource_json == "" and answer.member_count == 0
    assert member_ids(now) == sorted(ids[:2])


async def test_concurrent_member_adds_and_removes_lose_nothing(acme: Scim) -> None:
    ids = await users(acme, 50)
    keep, drop = ids[:25], ids[25:]
    group = await acme.create_group(
        {"displayName": "Busy", "members": [{"value": i} for i in drop]}
    )
    calls = [
        acme.patch_group(group["id"], {"op": "add", "path": "members", "value": [{"value": i}]})
        for i in keep
    ]
    calls += [
        acme.patch_group(group["id"], {"op": "remove", "path": f'members[value eq "{i}"]'})
        for i in drop
    ]
    random.shuffle(calls)
    await asyncio.gather(*calls)
    assert member_ids(await acme.get_group(group["id"])) == sorted(keep)


async def test_delete_group(acme: Scim, globex: Scim) -> None:
    ids = await users(acme, 1)
    group = await acme.create_group({"displayName": "D", "members": [{"value": ids[0]}]})
    await fails(globex.delete_group(group["id"]), grpc.StatusCode.NOT_FOUND)
    await acme.delete_group(group["id"])
    await fails(acme.get_group(group["id"]), grpc.StatusCode.NOT_FOUND)
    await fails(acme.delete_group(group["id"]), grpc.StatusCode.NOT_FOUND)
    assert (await acme.get_user(ids[0]))["groups"] == []


async def test_group_writes_are_audited_once_and_failed_ones_not(
    acme: Scim, pool: asyncpg.Pool
) -> None:
    """A creation's event names what it set (members when it had some), in
    the creation's transaction: a refused creation leaves no event, group or
    count behind."""
    ids = await users(acme, 2, prefix="audited")
    empty = await acme.create_group({"displayName": "Empty", "members": []}, exclude_members=True)
    assert "members" not in empty
    full = await acme.create_group(
        {"displayName": "Full", "externalId": "e1", "members": [{"value": i} for i in ids]}
    )
    await fails(
        acme.create_group({"displayName": "Refused", "members": [{"value": "not-a-uuid"}]}),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await fails(acme.create_group({"displayName": "full"}), grpc.StatusCode.ALREADY_EXISTS)
    await acme.patch_group(
        empty["id"], {"op": "add", "path": "members", "value": [{"value": ids[0]}]}
    )
    async with pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT action, resource_id, changed, token_id FROM audit_events "
            "WHERE resource_type = 'Group' ORDER BY event_id"
        )
    assert [(e["action"], e["resource_id"], e["changed"]) for e in events] == [
        ("create", empty["id"], ["displayName"]),
        ("create", full["id"], ["displayName", "externalId", "members"]),
        ("patch", empty["id"], ["members"]),
    ]
    assert all(e["token_id"] for e in events)
    _, total, _ = await acme.list_groups()
    assert total == 2
    assert (await acme.get_group(empty["id"]))["members"][0]["value"] == ids[0]


async def test_a_page_of_groups_lists_members_as_a_group_read_does(acme: Scim) -> None:
    """Listed members come in their order with their display, as GetGroup's
    do; an empty group lists none; without members, the count still comes."""
    ids = await users(acme, 4, prefix="listed")
    sent = [ids[i] for i in (2, 0, 3)]
    group = await acme.create_group(
        {"displayName": "Listed", "members": [{"value": i} for i in sent]}
    )
    await acme.create_group({"displayName": "Listed empty"})
    listed, total, _ = await acme.list_groups(filter='displayName sw "listed"')
    assert total == 2
    by_name = {g["displayName"]: g for g in listed}
    assert by_name["Listed"]["members"] == (await acme.get_group(group["id"]))["members"]
    assert [m["value"] for m in by_name["Listed"]["members"]] == sent
    assert all(m["display"] for m in by_name["Listed"]["members"])
    assert by_name["Listed empty"]["members"] == []
    answer = await acme.groups.ListGroups(
        gpb.ListGroupsRequest(
            query=scim_pb2.ListQuery(filter='displayName sw "listed"'), exclude_members=True
        ),
        metadata=acme.metadata,
    )
    counts = {g.display_name: g.member_count for g in answer.groups}
    assert counts == {"Listed": 3, "Listed empty": 0}
    assert all("members" not in g.resource_json for g in answer.groups)
