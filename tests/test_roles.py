"""Roles: mappings, highest-wins resolution, the RoleService and its change stream."""

from __future__ import annotations

import asyncio
import itertools

import grpc
import pytest

from tests.scim_client import Scim, okta_user
from tests.support import ADMIN, SERVICE, bearer, new_org_with_token
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import (
    admin_service_pb2_grpc,
    role_service_pb2_grpc,
    roles_pb2,
    user_service_pb2_grpc,
)
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import user_service_pb2 as upb

R = roles_pb2
ROLE = {
    "admin": R.ROLE_ADMIN,
    "boss": R.ROLE_BOSS,
    "member": R.ROLE_MEMBER,
    None: R.ROLE_UNSPECIFIED,
}
Admin = admin_service_pb2_grpc.AdminServiceStub


async def role_of(
    stub: role_service_pb2_grpc.RoleServiceStub, **selector: str
) -> rpb.GetEffectiveRoleResponse:
    """The role as the database says (the cache's freshness: test_role_cache.py)."""
    request = rpb.GetEffectiveRoleRequest(
        organization="acme",
        user=rpb.UserSelector(**selector),
        consistency=rpb.Consistency(fully_consistent=True),
    )
    return await stub.GetEffectiveRole(request, metadata=SERVICE)


async def map_group(admin: Admin, group: str, role: str | None) -> int:
    if role is None:
        request = apb.ClearGroupRoleRequest(organization="acme", group=group)
        return (await admin.ClearGroupRole(request, metadata=ADMIN)).changed_users
    request = apb.SetGroupRoleRequest(organization="acme", group=group, role=ROLE[role])
    return (await admin.SetGroupRole(request, metadata=ADMIN)).changed_users


async def watch(
    stub: role_service_pb2_grpc.RoleServiceStub, after: int, n: int
) -> list[roles_pb2.RoleChange]:
    """The next n changes after a sequence number (then disconnect)."""
    call = stub.WatchRoleChanges(
        rpb.WatchRoleChangesRequest(organization="acme", after_sequence=after), metadata=SERVICE
    )
    changes = []
    async with asyncio.timeout(20):
        async for response in call:
            if not response.HasField("change"):
                continue  # an idle checkpoint
            changes.append(response.change)
            if len(changes) == n:
                break
    call.cancel()
    return changes


async def assert_stream_replays_to_final_roles(
    stub: role_service_pb2_grpc.RoleServiceStub, user_ids: list[str], start: int
) -> None:
    """Replaying the stream from `start` (each user a member before it) ends
    where the database is for every one of `user_ids`, each change starting
    where the user's last one ended."""
    finals = {u: await role_of(stub, user_id=u) for u in user_ids}
    end = max(f.sequence for f in finals.values())
    replayed = dict.fromkeys(user_ids, R.ROLE_MEMBER)
    for change in await watch(stub, start, end - start) if end > start else []:
        if change.user_id in replayed:
            assert change.old_role == replayed[change.user_id]
            replayed[change.user_id] = change.new_role
    assert replayed == {u: f.role.role for u, f in finals.items()}


async def test_highest_mapped_role_wins(acme: Scim, admin_stub: Admin, roles_stub) -> None:  # type: ignore[no-untyped-def]
    groups = {}
    for role in ("admin", "boss", "member"):
        groups[role] = (await acme.create_group({"displayName": f"{role}s"}))["id"]
        await map_group(admin_stub, f"{role}S", role)  # by displayName, any case
    expected = {}
    for n in range(4):
        for combo in itertools.combinations(("admin", "boss", "member"), n):
            user = await acme.create_user(okta_user(f"u-{'-'.join(combo) or 'none'}@x.example"))
            for role in combo:
                await acme.patch_group(
                    groups[role], {"op": "add", "path": "members", "value": [{"value": user["id"]}]}
                )
            expected[user["id"]] = combo[0] if combo else "member"  # combos are in rank order
    for user_id, role in expected.items():
        answer = (await role_of(roles_stub, user_id=user_id)).role
        assert answer.role == ROLE[role], (user_id, role)
        assert answer.active
        if answer.source == R.ROLE_SOURCE_GROUP:
            assert [g.display_name for g in answer.granted_by] == [f"{role}s"]
        else:
            assert answer.source == R.ROLE_SOURCE_DEFAULT and not answer.granted_by


async def test_lookups_by_every_selector(acme: Scim, roles_stub) -> None:  # type: ignore[no-untyped-def]
    user = await acme.create_user(okta_user("Alice@X.example", externalId="00u-alice"))
    for selector in (
        {"user_id": user["id"]},
        {"user_name": "alice@x.EXAMPLE"},
        {"external_id": "00u-alice"},
        {"email": "ALICE@x.example"},
    ):
        answer = await role_of(roles_stub, **selector)
        assert answer.role.user_id == user["id"] and answer.role.role == R.ROLE_MEMBER
    for selector in (
        {"user_id": "00000000-0000-0000-0000-000000000000"},
        {"user_id": "nonsense"},
        {"user_name": "bob@x.example"},
        {"external_id": "00U-ALICE"},  # externalId is case-exact
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await role_of(roles_stub, **selector)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, selector


async def test_deactivation_and_deletion(acme: Scim, admin_stub: Admin, roles_stub) -> None:  # type: ignore[no-untyped-def]
    user = await acme.create_user(okta_user("leaver@x.example"))
    group = await acme.create_group({"displayName": "Admins", "members": [{"value": user["id"]}]})
    await map_group(admin_stub, group["id"], "admin")
    assert (await role_of(roles_stub, user_id=user["id"])).role.role == R.ROLE_ADMIN
    await acme.patch_user(user["id"], {"op": "replace", "value": {"active": False}})
    answer = (await role_of(roles_stub, user_id=user["id"])).role
    assert answer.role == R.ROLE_UNSPECIFIED and answer.source == R.ROLE_SOURCE_DEACTIVATED
    assert not answer.active
    await acme.replace_user(user["id"], okta_user("leaver@x.example", active=True))
    assert (await role_of(roles_stub, user_id=user["id"])).role.role == R.ROLE_ADMIN
    await acme.delete_user(user["id"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await role_of(roles_stub, user_id=user["id"])
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_membership_group_deletion_default_and_unmapping(
    acme: Scim, admin_stub: Admin, roles_stub
) -> None:  # type: ignore[no-untyped-def]
    user = await acme.create_user(okta_user("mover@x.example"))
    bosses = await acme.create_group({"displayName": "Bosses"})
    await map_group(admin_stub, "Bosses", "boss")
    await acme.replace_group(
        bosses["id"], {"displayName": "Bosses", "members": [{"value": user["id"]}]}
    )
    assert (await role_of(roles_stub, user_id=user["id"])).role.role == R.ROLE_BOSS
    await acme.patch_group(
        bosses["id"], {"op": "remove", "path": f'members[value eq "{user["id"]}"]'}
    )
    assert (await role_of(roles_stub, user_id=user["id"])).role.role == R.ROLE_MEMBER
    await acme.patch_group(
        bosses["id"], {"op": "add", "path": "members", "value": [{"value": user["id"]}]}
    )
    await map_group(admin_stub, "Bosses", None)
    assert (await role_of(roles_stub, user_id=user["id"])).role.role == R.ROLE_MEMBER
    await map_group(admin_stub, "Bosses", "admin")
    assert (await role_of(roles_stub, user_id=user["id"])).role.role == R.ROLE_ADMIN
    await acme.delete_group(bosses["id"])
    assert (await role_of(roles_stub, user_id=user["id"])).role.role == R.ROLE_MEMBER
    changed = await admin_stub.SetDefaultRole(
        apb.SetDefaultRoleRequest(organization="acme", role=R.ROLE_BOSS), metadata=ADMIN
    )
    assert changed.changed_users == 1
    assert (await role_of(roles_stub, user_id=user["id"])).role.role == R.ROLE_BOSS
    listed = await admin_stub.ListGroupRoles(
        apb.ListGroupRolesRequest(organization="acme"), metadata=ADMIN
    )
    assert listed.default_role == R.ROLE_BOSS and list(listed.mappings) == []


async def test_dry_run_equals_the_real_change(acme: Scim, admin_stub: Admin, roles_stub) -> None:  # type: ignore[no-untyped-def]
    ids = [(await acme.create_user(okta_user(f"d{i}@x.example")))["id"] for i in range(4)]
    await acme.create_group({"displayName": "Eng", "members": [{"value": i} for i in ids[:3]]})
    await acme.create_group({"displayName": "Leads", "members": [{"value": ids[0]}]})
    await map_group(admin_stub, "Leads", "admin")
    start = (await role_of(roles_stub, user_id=ids[0])).sequence
    preview = await admin_stub.PreviewRoleChanges(
        apb.PreviewRoleChangesRequest(
            organization="acme", mappings=[apb.ProposedMapping(group="Eng", role=R.ROLE_BOSS)]
        ),
        metadata=ADMIN,
    )
    predicted = {(c.user_id, c.old_role, c.new_role) for c in preview.changes}
    assert predicted == {(ids[1], R.ROLE_MEMBER, R.ROLE_BOSS), (ids[2], R.ROLE_MEMBER, R.ROLE_BOSS)}
    assert (await role_of(roles_stub, user_id=ids[1])).role.role == R.ROLE_MEMBER  # nothing written
    assert (await role_of(roles_stub, user_id=ids[1])).sequence == start
    assert await map_group(admin_stub, "Eng", "boss") == 2
    happened = {(c.user_id, c.old_role, c.new_role) for c in await watch(roles_stub, start, 2)}
    assert happened == predicted


async def test_watch_resumes_without_gap_or_duplicate(
    acme: Scim, admin_stub: Admin, roles_stub
) -> None:  # type: ignore[no-untyped-def]
    group = await acme.create_group({"displayName": "Admins"})
    await map_group(admin_stub, "Admins", "admin")
    ids = [(await acme.create_user(okta_user(f"w{i}@x.example")))["id"] for i in range(6)]
    first = await watch(roles_stub, 0, 3)
    assert [c.sequence for c in first] == [1, 2, 3]
    # changes made while nobody watches, and while a watcher is connected
    live = asyncio.create_task(watch(roles_stub, first[-1].sequence, 6))
    await asyncio.sleep(0.3)
    for user_id in ids[:3]:
        await acme.patch_group(
            group["id"], {"op": "add", "path": "members", "value": [{"value": user_id}]}
        )
    rest = await live
    assert [c.sequence for c in rest] == [4, 5, 6, 7, 8, 9]
    assert [c.cause for c in rest[:3]] == ["user created"] * 3
    assert [(c.user_id, c.old_role, c.new_role) for c in rest[3:]] == [
        (i, R.ROLE_MEMBER, R.ROLE_ADMIN) for i in ids[:3]
    ]
    assert all(c.organization_id == rest[0].organization_id for c in rest)


async def test_concurrent_changes_end_in_a_consistent_role(
    acme: Scim, admin_stub: Admin, roles_stub
) -> None:  # type: ignore[no-untyped-def]
    user = await acme.create_user(okta_user("busy@x.example"))
    admins = (await acme.create_group({"displayName": "Admins"}))["id"]
    bosses = (await acme.create_group({"displayName": "Bosses"}))["id"]
    await map_group(admin_stub, "Admins", "admin")
    await map_group(admin_stub, "Bosses", "boss")
    start = (await role_of(roles_stub, user_id=user["id"])).sequence
    member = [{"value": user["id"]}]
    calls = []
    for i in range(10):
        group = admins if i % 2 else bosses
        calls.append(acme.patch_group(group, {"op": "add", "path": "members", "value": member}))
        calls.append(
            acme.patch_group(group, {"op": "remove", "path": f'members[value eq "{user["id"]}"]'})
        )
    calls.append(acme.patch_group(admins, {"op": "add", "path": "members", "value": member}))
    await asyncio.gather(*calls)
    await assert_stream_replays_to_final_roles(roles_stub, [user["id"]], start)


async def test_members_added_while_the_group_is_mapped_and_unmapped_are_on_the_stream(
    acme: Scim, admin_stub: Admin, roles_stub
) -> None:  # type: ignore[no-untyped-def]
    """A member PATCH of a group mapped to no role writes no role change: it
    must see a mapping committed before it (which takes the group's lock), or
    commit before the mapping reads the members. Raced here, every user's
    stream ends at the role the database gives."""
    ids = [(await acme.create_user(okta_user(f"racer{i}@x.example")))["id"] for i in range(12)]
    group = (await acme.create_group({"displayName": "Racing"}))["id"]
    start = (await role_of(roles_stub, user_id=ids[0])).sequence
    calls = []
    for n, user_id in enumerate(ids):
        add = {"op": "add", "path": "members", "value": [{"value": user_id}]}
        calls.append(acme.patch_group(group, add))
        if n % 3 == 0:
            calls.append(map_group(admin_stub, "Racing", ("admin", None, "boss", None)[n // 3]))
    await asyncio.gather(*calls)
    await assert_stream_replays_to_final_roles(roles_stub, ids, start)


async def test_members_removed_or_deleted_while_the_group_is_mapped_are_on_the_stream(
    acme: Scim, admin_stub: Admin, roles_stub
) -> None:  # type: ignore[no-untyped-def]
    """As above for the writes that take members out: a removal, or the
    group's deletion, racing the group's mapping."""
    ids = [(await acme.create_user(okta_user(f"leaver{i}@x.example")))["id"] for i in range(8)]
    start = (await role_of(roles_stub, user_id=ids[0])).sequence
    for round_ in range(3):
        name = f"Leaving {round_}"
        group = (
            await acme.create_group({"displayName": name, "members": [{"value": u} for u in ids]})
        )["id"]
        removals = [
            acme.patch_group(group, {"op": "remove", "path": f'members[value eq "{u}"]'})
            for u in ids[:4]
        ]
        await asyncio.gather(map_group(admin_stub, name, "admin"), *removals)
        deleted = acme.delete_group(group)
        await asyncio.gather(deleted, map_group(admin_stub, name, "boss"), return_exceptions=True)
    await assert_stream_replays_to_final_roles(roles_stub, ids, start)


async def test_batch_and_list_by_role(acme: Scim, admin_stub: Admin, roles_stub) -> None:  # type: ignore[no-untyped-def]
    ids = [
        (await acme.create_user(okta_user(f"b{i}@x.example", externalId=f"ext-{i}")))["id"]
        for i in range(5)
    ]
    await acme.create_group({"displayName": "Admins", "members": [{"value": i} for i in ids[:2]]})
    await map_group(admin_stub, "Admins", "admin")
    await acme.patch_user(ids[4], {"op": "replace", "path": "active", "value": False})
    batch = await roles_stub.BatchGetEffectiveRoles(
        rpb.BatchGetEffectiveRolesRequest(
            organization="acme",
            consistency=rpb.Consistency(fully_consistent=True),
            users=[
                rpb.UserSelector(user_id=ids[0]),
                rpb.UserSelector(user_name="B2@x.example"),
                rpb.UserSelector(user_name="nobody@x.example"),
                rpb.UserSelector(external_id="ext-1"),
                rpb.UserSelector(email="b4@X.example"),
                rpb.UserSelector(user_id="00000000-0000-0000-0000-000000000000"),
            ],
        ),
        metadata=SERVICE,
    )
    assert [e.found for e in batch.entries] == [True, True, False, True, True, False]
    assert [e.role.role for e in batch.entries if e.found] == [
        R.ROLE_ADMIN,
        R.ROLE_MEMBER,
        R.ROLE_ADMIN,
        R.ROLE_UNSPECIFIED,
    ]
    seen, token = [], ""
    while True:
        page = await roles_stub.ListUsersByRole(
            rpb.ListUsersByRoleRequest(
                organization="acme", role=R.ROLE_MEMBER, page_size=1, page_token=token
            ),
            metadata=SERVICE,
        )
        seen += [u.user_id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids[2:4])


async def test_credentials_do_not_cross(
    channel: grpc.aio.Channel, admin_stub: Admin, roles_stub
) -> None:  # type: ignore[no-untyped-def]
    _, scim_secret = await new_org_with_token(admin_stub, "acme")
    request = rpb.GetEffectiveRoleRequest(organization="acme", user=rpb.UserSelector(user_name="x"))
    service = SERVICE[0][1].removeprefix("Bearer ")
    for metadata in ((), bearer(scim_secret), ADMIN, bearer(service + "x"), bearer(service[:-1])):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await roles_stub.GetEffectiveRole(request, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # the service credential however the scheme is spelled: past the check (no user "x")
    for spelled in (f"bearer {service}", f"BEARER   {service} "):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await roles_stub.GetEffectiveRole(request, metadata=(("authorization", spelled),))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    users = user_service_pb2_grpc.UserServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.ListUsers(upb.ListUsersRequest(), metadata=SERVICE)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_stub.ListOrganizations(apb.ListOrganizationsRequest(), metadata=SERVICE)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_hard_delete_ends_the_role_and_the_stream_says_so(acme: Scim, roles_stub) -> None:  # type: ignore[no-untyped-def]
    user = await acme.create_user(okta_user("purged@x.example"))
    group = await acme.create_group({"displayName": "Bosses", "members": [{"value": user["id"]}]})
    await acme.create_group({"displayName": "Other", "members": [{"value": user["id"]}]})
    start = (await role_of(roles_stub, user_id=user["id"])).sequence
    await acme.delete_user(user["id"])  # Entra's DELETE /Users/{id}
    (change,) = await watch(roles_stub, start, 1)
    assert (change.user_id, change.old_role, change.new_role, change.cause) == (
        user["id"],
        R.ROLE_MEMBER,
        R.ROLE_UNSPECIFIED,
        "user deleted",
    )
    assert (await acme.get_group(group["id"]))["members"] == []
