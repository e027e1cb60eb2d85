"""/Groups: the core's GroupService behind the shared resource endpoints.

Every call says whether the response needs `members`, so the core does not
read a large membership nobody asked for (excludedAttributes=members, or
attributes without members)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from common.wire import GROUP_URN
from gateway.mapping import Listing
from gateway.resources import Call
from wando.provisioning.v1 import group_service_pb2 as pb
from wando.provisioning.v1 import group_service_pb2_grpc, scim_pb2


class Groups:
    name = "Group"
    endpoint = "Groups"
    core_urn = GROUP_URN
    has_members = True

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = group_service_pb2_grpc.GroupServiceStub(channel)

    async def create(self, body_json: str, call: Call, *, exclude_members: bool) -> scim_pb2.Group:
        request = pb.CreateGroupRequest(group_json=body_json, exclude_members=exclude_members)
        return (await call.invoke(self._stub.CreateGroup, request)).group

    async def get(self, id: str, call: Call, *, exclude_members: bool) -> scim_pb2.Group:
        request = pb.GetGroupRequest(id=id, exclude_members=exclude_members)
        return (await call.invoke(self._stub.GetGroup, request)).group

    async def list(
        self, query: scim_pb2.ListQuery, call: Call, *, exclude_members: bool
    ) -> Listing:
        request = pb.ListGroupsRequest(query=query, exclude_members=exclude_members)
        response = await call.invoke(self._stub.ListGroups, request)
        return Listing(
            response.groups,
            response.total_results,
            response.start_index,
            response.next_cursor,
            response.previous_cursor,
        )

    async def replace(
        self, id: str, body_json: str, etag: str, call: Call, *, exclude_members: bool
    ) -> scim_pb2.Group:
        request = pb.ReplaceGroupRequest(
            id=id, group_json=body_json, etag=etag, exclude_members=exclude_members
        )
        return (await call.invoke(self._stub.ReplaceGroup, request)).group

    async def patch(
        self,
        id: str,
        operations: Sequence[scim_pb2.PatchOperation],
        etag: str,
        call: Call,
        *,
        exclude_members: bool,
        etag_only: bool = False,
    ) -> scim_pb2.Group:
        request = pb.PatchGroupRequest(
            id=id,
            operations=operations,
            etag=etag,
            exclude_members=exclude_members,
            etag_only=etag_only,
        )
        return (await call.invoke(self._stub.PatchGroup, request)).group

    async def delete(self, id: str, etag: str, call: Call) -> None:
        await call.invoke(self._stub.DeleteGroup, pb.DeleteGroupRequest(id=id, etag=etag))
