"""Microsoft Entra ID replayed through the real gateway, core and PostgreSQL:
both PATCH dialects (default, and ?aadOptscim062020) and the SCIM Validator's
checks (shared/reference/idp-scim-traffic.md §2 and §3.3)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.gateway.support import ENTERPRISE_URN, GROUP_URN, USER_URN, ScimHttp
from tests.support import ADMIN, SERVICE
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import admin_service_pb2_grpc, role_service_pb2_grpc, roles_pb2
from wando.provisioning.v1 import role_service_pb2 as rpb

# each test that reaches the core through the gateway, over gRPC and in-process
GATEWAY_CORES = ("grpc", "local")

AdminStub = admin_service_pb2_grpc.AdminServiceStub
RoleStub = role_service_pb2_grpc.RoleServiceStub

ADSCIM = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
ENTRA = {"User-Agent": None, "Accept-Charset": None}  # Entra's User-Agent is unpublished


def entra_user(n: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemas": [USER_URN, ENTERPRISE_URN],
        "externalId": str(uuid.uuid4()),
        "userName": f"Test_User_{n}@contoso.example",
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": f"Test_User_{n}@testuser.com"}],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName",
        },
        "roles": [],
        ENTERPRISE_URN: {"department": "Dept", "employeeNumber": "E1"},
    }
    body.update(extra)
    return body


@pytest.fixture(params=["default", "aadOptscim062020"])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def created(scim: ScimHttp, path: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await scim.post(path, body, headers=ENTRA)
    assert reply.status == 201, reply.text
    return dict(reply.body)


async def test_test_connection_finds_nothing_with_200(scim: ScimHttp) -> None:
    random = uuid.uuid4()
    users = await scim.get(f'/Users?filter=userName eq "{random}"', headers=ENTRA)
    assert users.assert_list() == [] and users.body["totalResults"] == 0
    groups = await scim.get(
        f'/Groups?excludedAttributes=members&filter=displayName eq "{random}"', headers=ENTRA
    )
    assert groups.assert_list() == []


async def test_user_lifecycle(scim: ScimHttp, dialect: str) -> None:
    suffix = "?aadOptscim062020" if dialect != "default" else ""
    body = entra_user("a1")
    user = await created(scim, "/Users" + suffix, body)
    uid = user["id"]
    # lookups Entra uses, deactivated users included
    for scim_filter in (
        f'userName eq "{body["userName"].upper()}"',
        f'externalId eq "{body["externalId"]}"',
        f'emails[type eq "work"].value eq "{body["emails"][0]["value"]}"',
    ):
        assert [
            u["id"]
            for u in (await scim.get(f"/Users?filter={scim_filter}", headers=ENTRA)).assert_list()
        ] == [uid]

    manager = await created(scim, "/Users", entra_user("boss"))
    if dialect == "default":
        ops = [
            {
                "op": "Replace",
                "path": 'emails[type eq "work"].value',
                "value": "updated@contoso.example",
            },
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
            {"op": "Replace", "path": f"{ENTERPRISE_URN}:employeeNumber", "value": "Eqpj"},
            {"op": "Add", "path": "nickName", "value": "Babs"},
            {"op": "Add", "path": f"{ENTERPRISE_URN}:manager", "value": manager["id"]},
        ]
    else:
        ops = [
            {
                "op": "replace",
                "path": 'emails[type eq "work"].value',
                "value": "updated@contoso.example",
            },
            {
                "op": "replace",
                "value": {
                    "name.familyName": "updatedFamilyName",
                    "nickName": "Babs",
                    f"{ENTERPRISE_URN}:employeeNumber": "Eqpj",
                },
            },
            {"op": "add", "path": f"{ENTERPRISE_URN}:manager", "value": {"value": manager["id"]}},
        ]
    reply = await scim.patch(f"/Users/{uid}{suffix}", *ops, headers=ENTRA)
    assert reply.status in (200, 204), reply.text
    got = (await scim.get(f"/Users/{uid}", headers=ENTRA)).body
    assert got["emails"][0]["value"] == "updated@contoso.example"
    assert got["name"]["familyName"] == "updatedFamilyName" and got["nickName"] == "Babs"
    assert got[ENTERPRISE_URN]["employeeNumber"] == "Eqpj"
    assert got[ENTERPRISE_URN]["manager"]["value"] == manager["id"]
    assert got[ENTERPRISE_URN]["department"] == "Dept"  # untouched

    # manager removed as Entra does it: replace with an empty value
    empty: Any = "" if dialect == "default" else {"value": ""}
    op = "Replace" if dialect == "default" else "replace"
    await scim.patch(
        f"/Users/{uid}",
        {"op": op, "path": f"{ENTERPRISE_URN}:manager", "value": empty},
        headers=ENTRA,
    )
    assert "manager" not in (await scim.get(f"/Users/{uid}", headers=ENTRA)).body[ENTERPRISE_URN]

    # disable: "False" (default dialect, also "Add"), false (flag); still found
    disable = (
        [{"op": "Replace", "path": "active", "value": "False"}]
        if dialect == "default"
        else [{"op": "replace", "path": "active", "value": False}]
    )
    assert (await scim.patch(f"/Users/{uid}", *disable, headers=ENTRA)).status in (200, 204)
    assert (await scim.get(f"/Users/{uid}", headers=ENTRA)).body["active"] is False
    found = (
        await scim.get(f'/Users?filter=userName eq "{body["userName"]}"', headers=ENTRA)
    ).assert_list()
    assert found[0]["active"] is False
    await scim.patch(
        f"/Users/{uid}", {"op": "Add", "path": "active", "value": "True"}, headers=ENTRA
    )
    assert (await scim.get(f"/Users/{uid}", headers=ENTRA)).body["active"] is True

    # hard delete: 204, then 404, and a second delete is 404
    assert (await scim.delete(f"/Users/{uid}", headers=ENTRA)).status == 204
    (await scim.get(f"/Users/{uid}", headers=ENTRA)).assert_error(404)
    (await scim.delete(f"/Users/{uid}", headers=ENTRA)).assert_error(404)


async def test_group_lifecycle(scim: ScimHttp, dialect: str) -> None:
    users = [(await created(scim, "/Users", entra_user(f"g{i}")))["id"] for i in range(4)]
    group = await created(
        scim,
        "/Groups",
        {
            "schemas": [GROUP_URN, ADSCIM],
            "externalId": str(uuid.uuid4()),
            "displayName": "displayName",
            "meta": {"resourceType": "Group"},
        },
    )
    gid = group["id"]
    assert group["members"] == []
    got = await scim.get(f"/Groups/{gid}?excludedAttributes=members", headers=ENTRA)
    assert got.status == 200 and "members" not in got.body
    listed = (
        await scim.get(
            '/Groups?excludedAttributes=members&filter=displayName eq "DISPLAYNAME"', headers=ENTRA
        )
    ).assert_list()
    assert [g["id"] for g in listed] == [gid] and "members" not in listed[0]

    op = "Replace" if dialect == "default" else "replace"
    await scim.patch(
        f"/Groups/{gid}", {"op": op, "path": "displayName", "value": "newName"}, headers=ENTRA
    )
    add = "Add" if dialect == "default" else "add"
    await scim.patch(
        f"/Groups/{gid}",
        {"op": add, "path": "members", "value": [{"$ref": None, "value": u} for u in users]},
        headers=ENTRA,
    )
    if dialect == "default":
        remove = [
            {
                "op": "Remove",
                "path": "members",
                "value": [{"$ref": None, "value": u} for u in users[:3]],
            }
        ]
    else:
        remove = [{"op": "remove", "path": f'members[value eq "{u}"]'} for u in users[:3]]
    await scim.patch(f"/Groups/{gid}", *remove, headers=ENTRA)
    final = (await scim.get(f"/Groups/{gid}", headers=ENTRA)).body
    assert final["displayName"] == "newName"
    assert [m["value"] for m in final["members"]] == [users[3]]  # every listed member removed

    assert (await scim.delete(f"/Groups/{gid}", headers=ENTRA)).status == 204
    (await scim.get(f"/Groups/{gid}", headers=ENTRA)).assert_error(404)
    (await scim.delete(f"/Groups/{gid}", headers=ENTRA)).assert_error(404)


async def test_validator_checks(scim: ScimHttp) -> None:
    """The Microsoft SCIM Validator's mandatory and preview checks (§3.3)."""
    body = entra_user(
        "v1",
        roles=[{"primary": "True", "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}],
        timezone="Europe/Stockholm",
        phoneNumbers=[{"type": t, "value": "+46 8 123"} for t in ("work", "mobile", "fax")],
        addresses=[
            {"type": "work", "streetAddress": "Main 1", "postalCode": "111 22", "country": "SE"}
        ],
    )
    body[ENTERPRISE_URN]["manager"] = {"value": "someone"}
    user = await created(scim, "/Users", body)  # 1
    assert user["roles"][0]["primary"] is True
    (await scim.post("/Users", body, headers=ENTRA)).assert_error(409, "uniqueness")  # 2
    assert (
        len(
            (
                await scim.get(f'/Users?filter=userName eq "{body["userName"]}"', headers=ENTRA)
            ).assert_list()
        )
        == 1
    )  # 3
    assert (
        await scim.get('/Users?filter=userName eq "nobody@contoso.example"', headers=ENTRA)
    ).assert_list() == []  # 4
    assert (
        len(
            (
                await scim.get(
                    f'/Users?filter=userName eq "{body["userName"].lower()}"', headers=ENTRA
                )
            ).assert_list()
        )
        == 1
    )  # 5
    uid = user["id"]
    p1 = await scim.patch(
        f"/Users/{uid}",  # 6 and P1: many ops on different attributes
        {"op": "replace", "path": "displayName", "value": "Vv"},
        {"op": "replace", "path": "title", "value": "Tt"},
        {"op": "replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+46 70 000"},
        {"op": "replace", "path": 'addresses[type eq "work"].postalCode', "value": "999 99"},
        {"op": "replace", "path": "preferredLanguage", "value": "sv-SE"},
        headers=ENTRA,
    )
    assert p1.status == 200, p1.text
    assert p1.body["title"] == "Tt" and p1.body["addresses"][0]["postalCode"] == "999 99"
    renamed = await scim.patch(
        f"/Users/{uid}",
        {"op": "replace", "path": "userName", "value": "renamed@contoso.example"},
        headers=ENTRA,
    )  # 7
    assert renamed.status == 200 and renamed.body["userName"] == "renamed@contoso.example"
    # the validator later POSTs a new user under the old name: no 409
    await created(scim, "/Users", entra_user("v1"))
    (await scim.delete("/Users/" + str(uuid.uuid4()), headers=ENTRA)).assert_error(404)  # P3
    group = await created(
        scim, "/Groups", {"schemas": [GROUP_URN], "displayName": "Validator Group"}
    )  # 18
    (
        await scim.post(
            "/Groups", {"schemas": [GROUP_URN], "displayName": "validator group"}, headers=ENTRA
        )
    ).assert_error(409, "uniqueness")  # 19
    await scim.patch(
        f"/Groups/{group['id']}", {"op": "replace", "value": {"externalId": "ext-g"}}, headers=ENTRA
    )  # 20
    await scim.patch(
        f"/Groups/{group['id']}",
        {"op": "replace", "value": {"displayName": "Renamed Group"}},
        headers=ENTRA,
    )  # 21
    await scim.patch(
        f"/Groups/{group['id']}",
        {"op": "replace", "path": "members", "value": [{"value": uid}]},
        headers=ENTRA,
    )  # 22
    both = await scim.patch(
        f"/Groups/{group['id']}",  # P5: add and remove one member in one request
        {"op": "add", "path": "members", "value": [{"value": user["id"]}]},
        {"op": "remove", "path": f'members[value eq "{uid}"]'},
        headers=ENTRA,
    )
    assert both.status == 204  # Entra prefers 204 for a group's PATCH (reference §2.5)
    final = (await scim.get(f"/Groups/{group['id']}", headers=ENTRA)).body
    assert final["displayName"] == "Renamed Group" and final["externalId"] == "ext-g"
    assert final["members"] == []


async def test_validator_group_lookups_and_missing_deletes(scim: ScimHttp) -> None:
    """Validator checks 14-17 and preview P3, P6."""
    member = await created(scim, "/Users", entra_user("m1"))
    group = await created(
        scim,
        "/Groups",
        {"schemas": [GROUP_URN], "displayName": "Lookup", "members": [{"value": member["id"]}]},
    )
    with_members = await scim.get('/Groups?filter=displayName eq "Lookup"', headers=ENTRA)  # 15
    assert [m["value"] for m in with_members.assert_list()[0]["members"]] == [member["id"]]
    without = await scim.get(
        '/Groups?excludedAttributes=members&filter=displayName eq "Lookup"', headers=ENTRA
    )  # 14
    assert without.body["totalResults"] == 1 and "members" not in without.assert_list()[0]
    assert (
        await scim.get('/Groups?filter=displayName eq "Nope"', headers=ENTRA)
    ).assert_list() == []  # 16
    assert [
        g["id"]
        for g in (
            await scim.get('/Groups?filter=displayName eq "LOOKUP"', headers=ENTRA)
        ).assert_list()
    ] == [group["id"]]  # 17
    (await scim.delete(f"/Users/{uuid.uuid4()}", headers=ENTRA)).assert_error(404)  # P3
    (await scim.delete(f"/Groups/{uuid.uuid4()}", headers=ENTRA)).assert_error(404)  # P6


async def test_app_role_assignments_in_the_roles_attribute(
    scim: ScimHttp, admin_stub: AdminStub, roles_stub: RoleStub
) -> None:
    """Entra sends app-role assignments in `roles` (issue #9): on POST as
    {primary, type, value} entries; on PATCH (AppRoleAssignmentsComplex, no
    flag) with each value a JSON-encoded object; SingleAppRoleAssignment as a
    value under `roles[primary eq "True"].value`. Mapped values give roles."""
    for value, role in (("Admin", roles_pb2.ROLE_ADMIN), ("Approver", roles_pb2.ROLE_BOSS)):
        await admin_stub.SetRoleValueMapping(
            apb.SetRoleValueMappingRequest(organization="initech", value=value, role=role),
            metadata=ADMIN,
        )

    async def role_of(user_id: str) -> int:
        request = rpb.GetEffectiveRoleRequest(
            organization="initech",
            user=rpb.UserSelector(user_id=user_id),
            consistency=rpb.Consistency(fully_consistent=True),
        )
        return (await roles_stub.GetEffectiveRole(request, metadata=SERVICE)).role.role

    entry = {"primary": "True", "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}
    admin = await created(scim, "/Users", entra_user("roles1", roles=[entry]))
    assert admin["roles"] == [{**entry, "primary": True}]
    assert await role_of(admin["id"]) == roles_pb2.ROLE_ADMIN

    # AppRoleAssignmentsComplex over PATCH: Add, then Remove, JSON-encoded values
    user = await created(scim, "/Users", entra_user("roles2"))
    encoded = json.dumps({"id": str(uuid.uuid4()), "value": "Approver", "displayName": "Approver"})
    add = {"op": "Add", "path": "roles", "value": [{"value": encoded}]}
    assert (await scim.patch(f"/Users/{user['id']}", add, headers=ENTRA)).status == 200
    assert await role_of(user["id"]) == roles_pb2.ROLE_BOSS
    remove = {"op": "Remove", "path": "roles", "value": [{"value": encoded}]}
    assert (await scim.patch(f"/Users/{user['id']}", remove, headers=ENTRA)).status == 200
    assert await role_of(user["id"]) == roles_pb2.ROLE_MEMBER

    # SingleAppRoleAssignment: replace the primary role's value
    single = {"op": "Replace", "path": 'roles[primary eq "True"].value', "value": "Approver"}
    reply = await scim.patch(f"/Users/{admin['id']}", single, headers=ENTRA)
    assert reply.status == 200, reply.text
    assert reply.body["roles"] == [{**entry, "primary": True, "value": "Approver"}]
    assert await role_of(admin["id"]) == roles_pb2.ROLE_BOSS
