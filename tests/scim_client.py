"""A thin test client for the core's SCIM services: dicts in, dicts out."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

from common.wirejson import dumps
from tests.support import bearer
from wando.provisioning.v1 import error_pb2, scim_pb2
from wando.provisioning.v1 import group_service_pb2 as gpb
from wando.provisioning.v1 import group_service_pb2_grpc as ggrpc
from wando.provisioning.v1 import user_service_pb2 as upb
from wando.provisioning.v1 import user_service_pb2_grpc as ugrpc


def reason(error: grpc.aio.AioRpcError) -> int:
    """The ErrorInfo reason a failed call carried."""
    for key, value in error.trailing_metadata() or ():
        if key == "wando-error-bin":
            return error_pb2.ErrorInfo.FromString(value).reason
    return error_pb2.ERROR_REASON_UNSPECIFIED


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Await a call that must fail with `code`; returns the error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


def ops(*operations: dict[str, Any]) -> list[scim_pb2.PatchOperation]:
    out = []
    for op in operations:
        message = scim_pb2.PatchOperation(op=op["op"], path=op.get("path", ""))
        if "value" in op:
            message.value_json = dumps(op["value"])
        out.append(message)
    return out


def resource(message: scim_pb2.User | scim_pb2.Group) -> dict[str, Any]:
    """A core resource's SCIM JSON."""
    value: dict[str, Any] = json.loads(message.resource_json)
    return value


class Scim:
    """Calls UserService and GroupService with one organisation's token."""

    def __init__(self, channel: grpc.aio.Channel, secret: str) -> None:
        self.users = ugrpc.UserServiceStub(channel)
        self.groups = ggrpc.GroupServiceStub(channel)
        self.metadata = bearer(secret)

    # users
    async def create_user(self, body: dict[str, Any]) -> dict[str, Any]:
        r = await self.users.CreateUser(
            upb.CreateUserRequest(user_json=dumps(body)), metadata=self.metadata
        )
        return resource(r.user)

    async def get_user(self, user_id: str) -> dict[str, Any]:
        r = await self.users.GetUser(upb.GetUserRequest(id=user_id), metadata=self.metadata)
        return resource(r.user)

    async def list_users(self, **query: Any) -> tuple[list[dict[str, Any]], int, int]:
        r = await self.users.ListUsers(
            upb.ListUsersRequest(query=scim_pb2.ListQuery(**query)), metadata=self.metadata
        )
        return [resource(u) for u in r.users], r.total_results, r.start_index

    async def replace_user(
        self, user_id: str, body: dict[str, Any], etag: str = ""
    ) -> dict[str, Any]:
        r = await self.users.ReplaceUser(
            upb.ReplaceUserRequest(id=user_id, user_json=dumps(body), etag=etag),
            metadata=self.metadata,
        )
        return resource(r.user)

    async def patch_user(
        self, user_id: str, *operations: dict[str, Any], etag: str = ""
    ) -> dict[str, Any]:
        r = await self.users.PatchUser(
            upb.PatchUserRequest(id=user_id, operations=ops(*operations), etag=etag),
            metadata=self.metadata,
        )
        return resource(r.user)

    async def delete_user(self, user_id: str, etag: str = "") -> None:
        await self.users.DeleteUser(
            upb.DeleteUserRequest(id=user_id, etag=etag), metadata=self.metadata
        )

    # groups
    async def create_group(
        self, body: dict[str, Any], exclude_members: bool = False
    ) -> dict[str, Any]:
        r = await self.groups.CreateGroup(
            gpb.CreateGroupRequest(group_json=dumps(body), exclude_members=exclude_members),
            metadata=self.metadata,
        )
        return resource(r.group)

    async def get_group(self, group_id: str, exclude_members: bool = False) -> dict[str, Any]:
        r = await self.groups.GetGroup(
            gpb.GetGroupRequest(id=group_id, exclude_members=exclude_members),
            metadata=self.metadata,
        )
        return resource(r.group)

    async def list_groups(
        self, exclude_members: bool = False, **query: Any
    ) -> tuple[list[dict[str, Any]], int, int]:
        r = await self.groups.ListGroups(
            gpb.ListGroupsRequest(
                query=scim_pb2.ListQuery(**query), exclude_members=exclude_members
            ),
            metadata=self.metadata,
        )
        return [resource(g) for g in r.groups], r.total_results, r.start_index

    async def replace_group(
        self, group_id: str, body: dict[str, Any], etag: str = ""
    ) -> dict[str, Any]:
        r = await self.groups.ReplaceGroup(
            gpb.ReplaceGroupRequest(id=group_id, group_json=dumps(body), etag=etag),
            metadata=self.metadata,
        )
        return resource(r.group)

    async def patch_group(
        self, group_id: str, *operations: dict[str, Any], etag: str = ""
    ) -> dict[str, Any]:
        r = await self.groups.PatchGroup(
            gpb.PatchGroupRequest(id=group_id, operations=ops(*operations), etag=etag),
            metadata=self.metadata,
        )
        return resource(r.group)

    async def delete_group(self, group_id: str, etag: str = "") -> None:
        await self.groups.DeleteGroup(
            gpb.DeleteGroupRequest(id=group_id, etag=etag), metadata=self.metadata
        )


def okta_user(user_name: str, **extra: Any) -> dict[str, Any]:
    """The body Okta sends to create a user (shared/reference §1.2 (3b))."""
    given, _, family = user_name.partition("@")[0].partition(".")
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": given.title() or "Test", "familyName": family.title() or "User"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": f"{given.title()} {family.title()}".strip(),
        "locale": "en-US",
        "externalId": f"00u{abs(hash(user_name)) % 10**12:012d}",
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }
    body.update(extra)
    return body
