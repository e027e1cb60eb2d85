"""Auth0's outbound SCIM Action replayed through the real gateway, core and
PostgreSQL (issue #9, user flow): correlation by externalId (the Auth0
user_id), update by PUT or PATCH, block → deactivate, delete, and retries of
the same event being harmless; and roles from the `roles` attribute, mapped by
Wando staff with the CLI, resolving through RoleService like group roles."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from core.server import CoreServer
from tests.gateway.support import USER_URN, ScimHttp
from tests.support import SERVICE, cli_env, cli_role, run_wando
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import role_service_pb2_grpc, roles_pb2

AUTH0 = {"User-Agent": None, "Accept-Charset": None}


def auth0_user(user_id: str, email: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemas": [USER_URN],
        "externalId": user_id,
        "userName": email,
        "emails": [{"value": email, "primary": True}],
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "active": True,
    }
    body.update(extra)
    return body


async def find(scim: ScimHttp, external_id: str) -> list[dict[str, Any]]:
    reply = await scim.get(f'/Users?filter=externalId eq "{external_id}"', headers=AUTH0)
    return reply.assert_list()


async def upsert(scim: ScimHttp, body: dict[str, Any], *, patch: bool = False) -> dict[str, Any]:
    """What the Action does on a user event: look up by externalId, then
    create, or replace (PUT, or PATCH when so configured)."""
    found = await find(scim, body["externalId"])
    if not found:
        reply = await scim.post("/Users", body, headers=AUTH0)
        assert reply.status == 201, reply.text
        return dict(reply.body)
    uid = found[0]["id"]
    if patch:
        values = {k: v for k, v in body.items() if k not in ("schemas", "externalId")}
        reply = await scim.patch(f"/Users/{uid}", {"op": "replace", "value": values}, headers=AUTH0)
    else:
        reply = await scim.put(f"/Users/{uid}", body, headers=AUTH0)
    assert reply.status == 200, reply.text
    return dict(reply.body)


async def test_auth0_user_lifecycle(scim: ScimHttp) -> None:
    auth0_id = "auth0|64f1c2a9e1b2c3d4e5f60718"
    roles = [{"value": "wando-admin", "primary": "True", "type": "auth0"}]
    created = await upsert(scim, auth0_user(auth0_id, "ada@example.com", roles=roles))
    assert created["externalId"] == auth0_id
    assert created["roles"] == [{"value": "wando-admin", "primary": True, "type": "auth0"}]
    # externalId is matched exactly: another case is another Auth0 user
    assert await find(scim, auth0_id.upper()) == []

    # a retried create event finds the user and changes nothing
    again = await upsert(scim, auth0_user(auth0_id, "ada@example.com", roles=roles))
    assert again["id"] == created["id"] and again["meta"]["version"] == created["meta"]["version"]
    # ... and one that POSTs blindly is a 409 that creates nothing twice
    blind = await scim.post("/Users", auth0_user(auth0_id, "ada@example.com"), headers=AUTH0)
    blind.assert_error(409, "uniqueness")
    assert [u["id"] for u in await find(scim, auth0_id)] == [created["id"]]

    # an update, by PUT and by PATCH
    put = await upsert(scim, auth0_user(auth0_id, "ada@example.com", name={"givenName": "Augusta"}))
    assert put["name"] == {"givenName": "Augusta"}
    patched = await upsert(scim, auth0_user(auth0_id, "ada.l@example.com"), patch=True)
    assert patched["userName"] == "ada.l@example.com"

    # blocked in Auth0 → deactivated, still found by externalId; retries harmless
    for _ in range(2):
        blocked = await upsert(scim, auth0_user(auth0_id, "ada.l@example.com", active=False))
        assert blocked["active"] is False
    assert (await find(scim, auth0_id))[0]["active"] is False

    # deleted in Auth0 → deleted; a retried delete is 404, and a later event re-creates
    assert (await scim.delete(f"/Users/{created['id']}", headers=AUTH0)).status == 204
    (await scim.delete(f"/Users/{created['id']}", headers=AUTH0)).assert_error(404)
    assert await find(scim, auth0_id) == []
    recreated = await upsert(scim, auth0_user(auth0_id, "ada.l@example.com"))
    assert recreated["id"] != created["id"]


async def test_auth0_roles_attribute_resolves_through_role_service(
    core: CoreServer, scim: ScimHttp, channel: grpc.aio.Channel
) -> None:
    """Issue #9's promise: a user provisioned from Auth0 with
    roles [{"value": "wando-admin"}] is an admin once the organisation maps
    that value, and later Auth0 events move the role."""
    auth0_id = "auth0|65a0f1e2d3c4b5a697887766"
    admin_role = [{"value": "wando-admin"}]
    created = await upsert(scim, auth0_user(auth0_id, "grace@example.com", roles=admin_role))
    roles = role_service_pb2_grpc.RoleServiceStub(channel)

    request = rpb.GetEffectiveRoleRequest(
        organization="initech",
        user=rpb.UserSelector(external_id=auth0_id),
        consistency=rpb.Consistency(fully_consistent=True),
    )

    async def role_of() -> roles_pb2.EffectiveRole:
        return (await roles.GetEffectiveRole(request, metadata=SERVICE)).role

    before = await roles.GetEffectiveRole(request, metadata=SERVICE)
    assert before.role.role == roles_pb2.ROLE_MEMBER  # not mapped yet: the default role

    env = cli_env(core.port)
    code, out, err = await run_wando("admin", "roles", "list", "--org", "initech", env=env)
    assert code == 0, err
    assert "role value 'wando-admin'\tnot mapped\t1 users" in out  # what Auth0 sends
    code, out, err = await run_wando(
        "admin",
        "roles",
        "map",
        "--org",
        "initech",
        "--value",
        "wando-admin",
        "--role",
        "admin",
        env=env,
    )
    assert code == 0, err
    assert "carried by 1 users; 1 users' role changed" in out
    answer = await role_of()
    assert answer.role == roles_pb2.ROLE_ADMIN
    assert answer.source == roles_pb2.ROLE_SOURCE_ROLES_ATTRIBUTE
    assert await cli_role(env, "initech", "grace@example.com") == "ROLE_ADMIN"

    # Auth0 events move the role, and each move is on the change stream
    call = roles.WatchRoleChanges(
        rpb.WatchRoleChangesRequest(organization="initech", after_sequence=before.sequence),
        metadata=SERVICE,
    )
    await upsert(scim, auth0_user(auth0_id, "grace@example.com"))  # PUT without roles
    assert (await role_of()).role == roles_pb2.ROLE_MEMBER
    await upsert(scim, auth0_user(auth0_id, "grace@example.com", roles=admin_role), patch=True)
    assert (await role_of()).role == roles_pb2.ROLE_ADMIN
    await upsert(scim, auth0_user(auth0_id, "grace@example.com", roles=admin_role, active=False))
    assert (await role_of()).role == roles_pb2.ROLE_UNSPECIFIED  # blocked: no role at all
    seen = []
    async with asyncio.timeout(20):
        async for response in call:
            if not response.HasField("change"):
                continue  # an idle checkpoint
            seen.append((response.change.new_role, response.change.cause))
            if len(seen) == 4:
                break
    call.cancel()
    assert seen == [
        (roles_pb2.ROLE_ADMIN, "role value 'wando-admin' mapped to admin"),
        (roles_pb2.ROLE_MEMBER, "roles attribute changed"),
        (roles_pb2.ROLE_ADMIN, "roles attribute changed"),
        (roles_pb2.ROLE_UNSPECIFIED, "user deactivated"),
    ]
    # deleted in Auth0: the user, and with it any role, is gone
    assert (await scim.delete(f"/Users/{created['id']}", headers=AUTH0)).status == 204
    try:
        await roles.GetEffectiveRole(request, metadata=SERVICE)
        raise AssertionError("a deleted user still has a role")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
