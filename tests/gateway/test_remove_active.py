"""Issue #17 item 5: PATCH `remove active` leaves `active` unassigned, and an
unassigned `active` grants no role (README, Roles): removing it never gives a
deactivated user their access back."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from tests.gateway.support import ScimHttp, okta_user
from tests.support import ADMIN, SERVICE
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import admin_service_pb2_grpc, role_service_pb2_grpc, roles_pb2
from wando.provisioning.v1 import role_service_pb2 as rpb

R = roles_pb2
REMOVE_ACTIVE = {"op": "remove", "path": "active"}


async def role_of(
    roles: role_service_pb2_grpc.RoleServiceStub, user_id: str
) -> rpb.GetEffectiveRoleResponse:
    # the database's answer: right after a write, the default (the replica's
    # cache) may still be the stream's few milliseconds behind (README, Roles)
    request = rpb.GetEffectiveRoleRequest(
        organization="initech",
        user=rpb.UserSelector(user_id=user_id),
        consistency=rpb.Consistency(fully_consistent=True),
    )
    return await roles.GetEffectiveRole(request, metadata=SERVICE)


async def changes_after(
    roles: role_service_pb2_grpc.RoleServiceStub, after: int, n: int
) -> list[roles_pb2.RoleChange]:
    call = roles.WatchRoleChanges(
        rpb.WatchRoleChangesRequest(organization="initech", after_sequence=after),
        metadata=SERVICE,
    )
    seen = []
    async with asyncio.timeout(20):
        async for response in call:
            seen.append(response.change)
            if len(seen) == n:
                break
    call.cancel()
    return seen


async def test_remove_active_unassigns_it_and_takes_the_role(
    scim: ScimHttp,
    admin_stub: admin_service_pb2_grpc.AdminServiceStub,
    roles_stub: role_service_pb2_grpc.RoleServiceStub,
) -> None:
    user = (await scim.post("/Users", okta_user("ada@initech.example"))).body
    await admin_stub.SetDefaultRole(
        apb.SetDefaultRoleRequest(organization="initech", role=R.ROLE_MEMBER), metadata=ADMIN
    )
    before = await role_of(roles_stub, user["id"])
    assert before.role.role == R.ROLE_MEMBER and before.role.active

    patched = await scim.patch(f"/Users/{user['id']}", REMOVE_ACTIVE)
    assert patched.status == 200, patched.text
    assert "active" not in patched.body
    assert patched.body["meta"]["version"] != user["meta"]["version"]
    got = await scim.get(f"/Users/{user['id']}")
    assert "active" not in got.body and got.headers["ETag"] == patched.headers["ETag"]
    projected = await scim.get(f"/Users/{user['id']}?attributes=active,userName")
    assert "active" not in projected.body and projected.body["userName"] == "ada@initech.example"

    # unassigned is inactive: no role, and the stream says the user was deactivated
    after = await role_of(roles_stub, user["id"])
    assert after.role.role == R.ROLE_UNSPECIFIED and not after.role.active
    assert after.role.source == R.ROLE_SOURCE_DEACTIVATED
    (change,) = await changes_after(roles_stub, before.sequence, 1)
    assert (change.user_id, change.old_role, change.new_role) == (
        user["id"],
        R.ROLE_MEMBER,
        R.ROLE_UNSPECIFIED,
    )
    assert change.cause == "user deactivated"
    events = await admin_stub.ListAuditEvents(
        apb.ListAuditEventsRequest(organization="initech", resource_id=user["id"]),
        metadata=ADMIN,
    )
    assert events.events[0].action == "patch"
    assert list(events.events[0].changed_attributes) == ["active"]

    # filters see `active` as the representation shows it: absent
    for scim_filter, found in (
        ("active pr", False),
        ("active eq false", False),
        ("active eq true", False),
        ("not (active eq true)", True),
    ):
        listed = (await scim.get(f"/Users?filter={scim_filter}")).assert_list()
        assert (user["id"] in [u["id"] for u in listed]) is found, scim_filter

    # removing it again changes nothing: same version, no audit event
    again = await scim.patch(f"/Users/{user['id']}", REMOVE_ACTIVE)
    assert again.status == 200 and again.headers["ETag"] == patched.headers["ETag"]

    # a PUT that says nothing about active leaves it unassigned (and inactive)
    body = okta_user("ada@initech.example", displayName="Ada L")
    del body["active"]
    put = await scim.put(f"/Users/{user['id']}", body)
    assert put.status == 200 and "active" not in put.body and put.body["displayName"] == "Ada L"
    assert not (await role_of(roles_stub, user["id"])).role.active

    # the IdP turns the user back on by saying so
    on = await scim.patch(
        f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": True}
    )
    assert on.body["active"] is True
    assert (await role_of(roles_stub, user["id"])).role.role == R.ROLE_MEMBER


async def test_removing_active_from_a_deactivated_user_keeps_them_out(
    scim: ScimHttp, roles_stub: role_service_pb2_grpc.RoleServiceStub
) -> None:
    user = (await scim.post("/Users", okta_user("bob@initech.example", active=False))).body
    before = await role_of(roles_stub, user["id"])
    assert not before.role.active
    patched = await scim.patch(f"/Users/{user['id']}", REMOVE_ACTIVE)
    assert patched.status == 200 and "active" not in patched.body
    after = await role_of(roles_stub, user["id"])
    assert after.role.role == R.ROLE_UNSPECIFIED and not after.role.active
    assert after.sequence == before.sequence  # no role change to report
    # a later PATCH of something else does not bring `active` back either
    renamed = await scim.patch(
        f"/Users/{user['id']}", {"op": "replace", "path": "displayName", "value": "Bob"}
    )
    assert "active" not in renamed.body and renamed.body["displayName"] == "Bob"
    assert not (await role_of(roles_stub, user["id"])).role.active


async def test_remove_active_with_a_value_or_filter_is_refused(scim: ScimHttp) -> None:
    user = (await scim.post("/Users", okta_user("cy@initech.example"))).body
    bad = await scim.patch(
        f"/Users/{user['id']}", {"op": "remove", "path": "active[value eq true]"}
    )
    assert bad.status == 400, bad.text
    assert bad.body["scimType"] in ("invalidPath", "invalidFilter")
    unchanged = await scim.get(f"/Users/{user['id']}")
    assert unchanged.body["active"] is True and unchanged.headers["ETag"] == user["meta"]["version"]


async def test_a_user_seeded_without_active_in_its_document_stays_active(
    scim: ScimHttp, pool: asyncpg.Pool, roles_stub: role_service_pb2_grpc.RoleServiceStub
) -> None:
    """Rows written by SQL (bench/seed.py, drills) may be active by the column
    alone: a later write keeps them active."""
    user = (await scim.post("/Users", okta_user("dee@initech.example"))).body
    await pool.execute(
        "UPDATE users SET attributes = attributes - 'active' WHERE user_id = $1",
        uuid.UUID(user["id"]),
    )
    title = {"op": "replace", "path": "title", "value": "Boss"}
    patched = await scim.patch(f"/Users/{user['id']}", title)
    assert patched.status == 200 and patched.body["active"] is True
    body = okta_user("dee@initech.example")
    del body["active"]
    assert (await scim.put(f"/Users/{user['id']}", body)).body["active"] is True
    assert (await role_of(roles_stub, user["id"])).role.active
