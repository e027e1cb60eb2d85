"""Roles from the SCIM `roles` attribute (issue #9): an organisation maps
`roles[].value`s to Wando roles; they combine with group mappings under the
same highest-wins rule, and flow through the same resolution, audit and
change stream."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from tests.scim_client import Scim, fails, okta_user
from tests.support import ADMIN
from tests.test_roles import ROLE, Admin, map_group, role_of, watch
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import role_service_pb2_grpc, roles_pb2

R = roles_pb2
Roles = role_service_pb2_grpc.RoleServiceStub


async def map_value(admin: Admin, value: str, role: str | None, org: str = "acme") -> int:
    if role is None:
        request = apb.ClearRoleValueMappingRequest(organization=org, value=value)
        return (await admin.ClearRoleValueMapping(request, metadata=ADMIN)).changed_users
    set_request = apb.SetRoleValueMappingRequest(organization=org, value=value, role=ROLE[role])
    return (await admin.SetRoleValueMapping(set_request, metadata=ADMIN)).changed_users


def with_roles(user_name: str, *values: str, **extra: Any) -> dict[str, Any]:
    entries = [{"value": v, "type": "auth0", "primary": i == 0} for i, v in enumerate(values)]
    return okta_user(user_name, roles=entries, **extra)


async def test_mapping_a_value_gives_its_holders_the_role(
    acme: Scim, admin_stub: Admin, roles_stub: Roles
) -> None:
    ada = await acme.create_user(with_roles("ada@x.example", "wando-admin"))
    bob = await acme.create_user(with_roles("bob@x.example", "wando-boss", "wando-admin-typo"))
    cy = await acme.create_user(okta_user("cy@x.example"))
    # unmapped values give nothing: everyone has the default role
    for user in (ada, bob, cy):
        assert (await role_of(roles_stub, user_id=user["id"])).role.role == R.ROLE_MEMBER

    start = (await role_of(roles_stub, user_id=ada["id"])).sequence
    assert await map_value(admin_stub, "wando-admin", "admin") == 1
    assert await map_value(admin_stub, "wando-boss", "boss") == 1
    answer = (await role_of(roles_stub, user_id=ada["id"])).role
    assert answer.role == R.ROLE_ADMIN
    assert answer.source == R.ROLE_SOURCE_ROLES_ATTRIBUTE
    assert [(v.value, v.role) for v in answer.granted_by_values] == [("wando-admin", R.ROLE_ADMIN)]
    assert list(answer.granted_by) == []
    assert (await role_of(roles_stub, user_id=bob["id"])).role.role == R.ROLE_BOSS
    assert (await role_of(roles_stub, user_id=cy["id"])).role.role == R.ROLE_MEMBER

    # the mapping's changes are on the stream, with their cause
    changes = await watch(roles_stub, start, 2)
    assert [(c.user_id, c.old_role, c.new_role) for c in changes] == [
        (ada["id"], R.ROLE_MEMBER, R.ROLE_ADMIN),
        (bob["id"], R.ROLE_MEMBER, R.ROLE_BOSS),
    ]
    assert changes[0].cause == "role value 'wando-admin' mapped to admin"

    # values match exactly: another case is another value
    eve = await acme.create_user(with_roles("eve@x.example", "Wando-Admin"))
    assert (await role_of(roles_stub, user_id=eve["id"])).role.role == R.ROLE_MEMBER

    # unmapping returns the holders to the default; unmapping twice is NOT_FOUND
    assert await map_value(admin_stub, "wando-admin", None) == 1
    assert (await role_of(roles_stub, user_id=ada["id"])).role.role == R.ROLE_MEMBER
    error = await fails(map_value(admin_stub, "wando-admin", None), grpc.StatusCode.NOT_FOUND)
    assert "wando-admin" in (error.details() or "")


async def test_groups_and_values_combine_highest_wins(
    acme: Scim, admin_stub: Admin, roles_stub: Roles
) -> None:
    await map_value(admin_stub, "wando-admin", "admin")
    await map_value(admin_stub, "wando-boss", "boss")
    await acme.create_group({"displayName": "Admins"})
    await acme.create_group({"displayName": "Bosses"})
    await map_group(admin_stub, "Admins", "admin")
    await map_group(admin_stub, "Bosses", "boss")

    cases = [
        # (values, groups, expected role, expected source)
        (["wando-admin"], ["Bosses"], "admin", R.ROLE_SOURCE_ROLES_ATTRIBUTE),
        (["wando-boss"], ["Admins"], "admin", R.ROLE_SOURCE_GROUP),
        (["wando-admin"], ["Admins"], "admin", R.ROLE_SOURCE_GROUP),  # a tie: both shown
        (["wando-boss", "wando-admin"], [], "admin", R.ROLE_SOURCE_ROLES_ATTRIBUTE),
        (["wando-boss"], [], "boss", R.ROLE_SOURCE_ROLES_ATTRIBUTE),
        (["unmapped"], [], "member", R.ROLE_SOURCE_DEFAULT),
    ]
    groups = {g["displayName"]: g["id"] for g in (await acme.list_groups())[0]}
    for n, (values, in_groups, role, source) in enumerate(cases):
        user = await acme.create_user(with_roles(f"c{n}@x.example", *values))
        for name in in_groups:
            await acme.patch_group(
                groups[name], {"op": "add", "path": "members", "value": [{"value": user["id"]}]}
            )
        answer = (await role_of(roles_stub, user_id=user["id"])).role
        assert (answer.role, answer.source) == (ROLE[role], source), (values, in_groups)
        if n == 2:
            assert [g.display_name for g in answer.granted_by] == ["Admins"]
            assert [v.value for v in answer.granted_by_values] == ["wando-admin"]

    # ListUsersByRole and the batch see value-granted roles too
    listed = await roles_stub.ListUsersByRole(
        rpb.ListUsersByRoleRequest(organization="acme", role=R.ROLE_ADMIN),
        metadata=(("authorization", "Bearer wando_svc_test-credential-for-the-suite"),),
    )
    assert sorted(u.user_name for u in listed.users) == [
        "c0@x.example",
        "c1@x.example",
        "c2@x.example",
        "c3@x.example",
    ]

    # the default role no longer reaches users with a mapped value
    changed = await admin_stub.SetDefaultRole(
        apb.SetDefaultRoleRequest(organization="acme", role=R.ROLE_BOSS), metadata=ADMIN
    )
    assert changed.changed_users == 1  # c5 only (its value is unmapped)


async def test_user_writes_that_change_roles_change_the_role(
    acme: Scim, admin_stub: Admin, roles_stub: Roles
) -> None:
    await map_value(admin_stub, "wando-admin", "admin")
    user = await acme.create_user(with_roles("dana@x.example", "wando-admin"))
    uid = user["id"]
    start = (await role_of(roles_stub, user_id=uid)).sequence
    # entries keep primary and type as sent
    assert user["roles"] == [{"value": "wando-admin", "type": "auth0", "primary": True}]

    # PUT without the value: back to member; PUT with it again: admin
    await acme.replace_user(uid, okta_user("dana@x.example"))
    assert (await role_of(roles_stub, user_id=uid)).role.role == R.ROLE_MEMBER
    await acme.replace_user(uid, with_roles("dana@x.example", "wando-admin"))
    assert (await role_of(roles_stub, user_id=uid)).role.role == R.ROLE_ADMIN
    # PATCH remove by filter, then add
    await acme.patch_user(uid, {"op": "remove", "path": 'roles[value eq "wando-admin"]'})
    assert (await role_of(roles_stub, user_id=uid)).role.role == R.ROLE_MEMBER
    await acme.patch_user(uid, {"op": "add", "path": "roles", "value": [{"value": "wando-admin"}]})
    assert (await role_of(roles_stub, user_id=uid)).role.role == R.ROLE_ADMIN
    # a write that leaves the values alone changes nothing on the stream
    await acme.patch_user(uid, {"op": "replace", "path": "displayName", "value": "Dana"})
    # deactivation still wins over every grant
    await acme.patch_user(uid, {"op": "replace", "path": "active", "value": False})
    answer = (await role_of(roles_stub, user_id=uid)).role
    assert answer.role == R.ROLE_UNSPECIFIED and answer.source == R.ROLE_SOURCE_DEACTIVATED
    assert list(answer.granted_by_values) == []

    changes = await watch(roles_stub, start, 5)
    assert [(c.old_role, c.new_role, c.cause) for c in changes] == [
        (R.ROLE_ADMIN, R.ROLE_MEMBER, "roles attribute changed"),
        (R.ROLE_MEMBER, R.ROLE_ADMIN, "roles attribute changed"),
        (R.ROLE_ADMIN, R.ROLE_MEMBER, "roles attribute changed"),
        (R.ROLE_MEMBER, R.ROLE_ADMIN, "roles attribute changed"),
        (R.ROLE_ADMIN, R.ROLE_UNSPECIFIED, "user deactivated"),
    ]
    final = await role_of(roles_stub, user_id=uid)
    assert final.sequence == changes[-1].sequence  # nothing else was written


async def test_entra_json_encoded_role_values(
    acme: Scim, admin_stub: Admin, roles_stub: Roles
) -> None:
    """Entra's PATCH for AppRoleAssignmentsComplex sends each entry's value as
    a JSON-encoded object; its inner value is what is mapped."""
    await map_value(admin_stub, "Approver", "boss")
    user = await acme.create_user(okta_user("erin@x.example"))
    encoded = '{"id":"06b07648-ecfe-589f-9d2f-6325724a46ee","value":"Approver","displayName":"A"}'
    await acme.patch_user(user["id"], {"op": "Add", "path": "roles", "value": [{"value": encoded}]})
    assert (await role_of(roles_stub, user_id=user["id"])).role.role == R.ROLE_BOSS
    stored = await acme.get_user(user["id"])
    assert stored["roles"] == [{"value": encoded}]  # kept as sent
    await acme.patch_user(
        user["id"], {"op": "Remove", "path": "roles", "value": [{"value": encoded}]}
    )
    assert (await role_of(roles_stub, user_id=user["id"])).role.role == R.ROLE_MEMBER


async def test_preview_listing_audit_and_isolation(
    acme: Scim, globex: Scim, admin_stub: Admin, roles_stub: Roles
) -> None:
    ids = [
        (await acme.create_user(with_roles(f"p{i}@x.example", "wando-admin")))["id"]
        for i in range(3)
    ]
    await acme.create_user(with_roles("q@x.example", "viewer"))
    stranger = await globex.create_user(with_roles("p0@x.example", "wando-admin"))

    preview = await admin_stub.PreviewRoleChanges(
        apb.PreviewRoleChangesRequest(
            organization="acme",
            mappings=[apb.ProposedMapping(role_value="wando-admin", role=R.ROLE_ADMIN)],
        ),
        metadata=ADMIN,
    )
    assert sorted(c.user_id for c in preview.changes) == sorted(ids)
    assert (await role_of(roles_stub, user_id=ids[0])).role.role == R.ROLE_MEMBER  # dry run
    assert await map_value(admin_stub, "wando-admin", "admin") == 3

    # another organisation's users carrying the same value are untouched
    other = await roles_stub.GetEffectiveRole(
        rpb.GetEffectiveRoleRequest(
            organization="globex",
            user=rpb.UserSelector(user_id=stranger["id"]),
            consistency=rpb.Consistency(fully_consistent=True),
        ),
        metadata=(("authorization", "Bearer wando_svc_test-credential-for-the-suite"),),
    )
    assert other.role.role == R.ROLE_MEMBER

    listed = await admin_stub.ListGroupRoles(
        apb.ListGroupRolesRequest(organization="acme"), metadata=ADMIN
    )
    assert [(v.value, v.role, v.users) for v in listed.role_values] == [
        ("viewer", R.ROLE_UNSPECIFIED, 1),  # carried, not mapped: staff can see what is sent
        ("wando-admin", R.ROLE_ADMIN, 3),
    ]

    events = await admin_stub.ListAuditEvents(
        apb.ListAuditEventsRequest(organization="acme", resource_type="RoleValueMapping"),
        metadata=ADMIN,
    )
    assert [(e.action, e.resource_id) for e in events.events] == [("map", "wando-admin")]


@pytest.mark.parametrize(
    ("value", "role", "code"),
    [
        ("", R.ROLE_ADMIN, grpc.StatusCode.INVALID_ARGUMENT),
        ("x" * 4097, R.ROLE_ADMIN, grpc.StatusCode.INVALID_ARGUMENT),
        ("wando-admin", R.ROLE_UNSPECIFIED, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_bad_value_mappings_are_refused(
    acme: Scim, admin_stub: Admin, value: str, role: int, code: grpc.StatusCode
) -> None:
    request = apb.SetRoleValueMappingRequest(organization="acme", value=value, role=role)  # type: ignore[arg-type]
    await fails(admin_stub.SetRoleValueMapping(request, metadata=ADMIN), code)
    unknown = apb.SetRoleValueMappingRequest(organization="nope", value="v", role=R.ROLE_ADMIN)
    await fails(admin_stub.SetRoleValueMapping(unknown, metadata=ADMIN), grpc.StatusCode.NOT_FOUND)


async def test_creates_racing_role_configuration_changes_stream_every_final_role(
    acme: Scim, admin_stub: Admin, roles_stub: Roles
) -> None:
    """Users created while staff change the default role and a value mapping:
    replaying the change stream gives every new user exactly the role the
    RoleService answers afterwards (a creation records its role without
    holding the counter for long; configuration changes must not slip past)."""
    seed = await acme.create_user(okta_user("seed@x.example"))
    start = (await role_of(roles_stub, user_id=seed["id"])).sequence

    async def create(i: int) -> str:
        body = (
            with_roles(f"race{i}@x.example", "wando-boss")
            if i % 2
            else okta_user(f"race{i}@x.example")
        )
        return str((await acme.create_user(body))["id"])

    async def reconfigure() -> None:
        for i in range(8):
            role = "admin" if i % 2 == 0 else "member"
            request = apb.SetDefaultRoleRequest(organization="acme", role=ROLE[role])
            await admin_stub.SetDefaultRole(request, metadata=ADMIN)
            await map_value(admin_stub, "wando-boss", "boss" if i % 2 == 0 else None)

    created, _ = await asyncio.gather(
        asyncio.gather(*(create(i) for i in range(60))), reconfigure()
    )
    end = (await role_of(roles_stub, user_id=seed["id"])).sequence
    replayed: dict[str, int] = {}
    for change in await watch(roles_stub, start, end - start):
        if change.user_id in replayed or change.user_id != seed["id"]:
            assert change.old_role == replayed.get(change.user_id, R.ROLE_UNSPECIFIED)
        replayed[change.user_id] = change.new_role
    for user_id in created:
        final = await role_of(roles_stub, user_id=user_id)
        assert final.role.role != R.ROLE_UNSPECIFIED
        assert replayed.get(user_id) == final.role.role, user_id
