"""Issue #5's promise end to end: an Okta-style push over HTTP, then
`wando admin roles map`, gives every user the role the customer guide promises,
visible through grpcurl, the CLI and the change stream; later changes reach a
watching client."""

from __future__ import annotations

import asyncio
import json

import grpc

from core.server import CoreServer
from tests.gateway.support import ScimHttp, okta_user
from tests.support import SERVICE, SERVICE_TOKEN, cli_env, cli_role, run_wando
from tests.test_grpcurl import grpcurl
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import role_service_pb2_grpc, roles_pb2


async def test_okta_push_then_mapping_gives_the_promised_roles(
    core: CoreServer, scim: ScimHttp, channel: grpc.aio.Channel
) -> None:
    # Okta: create users (AIW: filter, then POST), push groups, membership by PUT
    ids = {}
    for name in ("ada", "bob", "cy", "dee"):
        user_name = f"{name}@initech.example"
        scim_filter = f'userName eq "{user_name}"'
        assert (
            await scim.get(f"/Users?filter={scim_filter}&startIndex=1&count=100")
        ).assert_list() == []
        created = await scim.post("/Users", okta_user(user_name))
        assert created.status == 201, created.text
        ids[name] = created.body["id"]
    groups = {}
    for display, members in (("Admins", ["ada"]), ("Managers", ["ada", "bob"]), ("Staff", ["cy"])):
        created = await scim.post("/Groups", {"displayName": display, "members": []})
        assert created.status == 201, created.text
        groups[display] = created.body["id"]
        body = {"displayName": display, "members": [{"value": ids[m]} for m in members]}
        assert (await scim.put(f"/Groups/{created.body['id']}", body)).status == 200

    env = cli_env(core.port)
    for group, role in (("Admins", "admin"), ("managers", "boss"), ("Staff", "member")):
        code, _, err = await run_wando(
            "admin", "roles", "map", "--org", "initech", "--group", group, "--role", role, env=env
        )
        assert code == 0, err

    expected = {"ada": "admin", "bob": "boss", "cy": "member", "dee": "member"}
    for name, role in expected.items():
        # the CLI
        assert (
            await cli_role(env, "initech", f"{name}@initech.example") == f"ROLE_{role.upper()}"
        ), name
        # grpcurl
        code, out, err = await grpcurl(
            "-plaintext",
            "-H",
            f"authorization: Bearer {SERVICE_TOKEN}",
            "-d",
            json.dumps(
                {
                    "organization": "initech",
                    "user": {"user_name": f"{name}@initech.example"},
                    "consistency": {"fully_consistent": True},
                }
            ),
            f"127.0.0.1:{core.port}",
            "wando.provisioning.v1.RoleService/GetEffectiveRole",
        )
        assert code == 0, err
        assert json.loads(out)["role"]["role"] == f"ROLE_{role.upper()}", name

    # the stream: replaying from the start ends in the same roles ...
    roles = role_service_pb2_grpc.RoleServiceStub(channel)
    call = roles.WatchRoleChanges(
        rpb.WatchRoleChangesRequest(organization="initech"), metadata=SERVICE
    )
    latest: dict[str, int] = {}
    by_id = {v: k for k, v in ids.items()}
    async with asyncio.timeout(20):
        async for response in call:
            if not response.HasField("change"):
                continue  # an idle checkpoint
            latest[by_id[response.change.user_id]] = response.change.new_role
            if {k: roles_pb2.Role.Name(v) for k, v in latest.items()} == {
                k: f"ROLE_{v.upper()}" for k, v in expected.items()
            }:
                break
        # ... and a later change (Okta deactivates ada by PUT) reaches the watcher
        body = okta_user("ada@initech.example", active=False)
        assert (await scim.put(f"/Users/{ids['ada']}", body)).status == 200
        async for response in call:
            if response.change.user_id == ids["ada"]:
                assert response.change.old_role == roles_pb2.ROLE_ADMIN
                assert response.change.new_role == roles_pb2.ROLE_UNSPECIFIED
                assert response.change.cause == "user deactivated"
                break
    call.cancel()
