"""/Users: the core's UserService behind the shared resource endpoints."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from common.wire import USER_URN
from gateway.mapping import Listing
from gateway.resources import Call
from wando.provisioning.v1 import scim_pb2, user_service_pb2_grpc
from wando.provisioning.v1 import user_service_pb2 as pb


class Users:
    name = "User"
    endpoint = "Users"
    core_urn = USER_URN
    has_members = False

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = user_service_pb2_grpc.UserServiceStub(channel)

    async def create(self, body_json: str, call: Call, *, exclude_members: bool) -> scim_pb2.User:
        request = pb.CreateUserRequest(user_json=body_json)
        return (await call.invoke(self._stub.CreateUser, request)).user

    async def get(self, id: str, call: Call, *, exclude_members: bool) -> scim_pb2.User:
        return (await call.invoke(self._stub.GetUser, pb.GetUserRequest(id=id))).user

    async def list(
        self, query: scim_pb2.ListQuery, call: Call, *, exclude_members: bool
    ) -> Listing:
        response = await call.invoke(self._stub.ListUsers, pb.ListUsersRequest(query=query))
        return Listing(
            response.users,
            response.total_results,
            response.start_index,
            response.next_cursor,
            response.previous_cursor,
        )

    async def replace(
        self, id: str, body_json: str, etag: str, call: Call, *, exclude_members: bool
    ) -> scim_pb2.User:
        request = pb.ReplaceUserRequest(id=id, user_json=body_json, etag=etag)
        return (await call.invoke(self._stub.ReplaceUser, request)).user

    async def patch(
        self,
        id: str,
        operations: Sequence[scim_pb2.PatchOperation],
        etag: str,
        call: Call,
        *,
        exclude_members: bool,
        etag_only: bool = False,
    ) -> scim_pb2.User:
        request = pb.PatchUserRequest(id=id, operations=operations, etag=etag)
        return (await call.invoke(self._stub.PatchUser, request)).user

    async def delete(self, id: str, etag: str, call: Call) -> None:
        await call.invoke(self._stub.DeleteUser, pb.DeleteUserRequest(id=id, etag=etag))
