"""POST /.search at the SCIM root (RFC 7644 §3.4.3): users and groups of the
token's organisation together, behind the core's SearchService.

The SearchRequest is read as for /Users/.search; each result is rendered as
its own endpoint renders it (meta.location, `$ref`s, projection with its own
core schema), so a user found here is the user GET /Users/{id} answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from aiohttp import web

from common.wire import GROUP_URN
from gateway import mapping
from gateway.corechannel import CoreChannel
from gateway.groups import Groups
from gateway.keys import SEARCH, SEARCH_FILTER
from gateway.query import list_query_from_search_request
from gateway.resources import Call, ResourceEndpoints, core_call, request_body
from gateway.responses import scim_response
from gateway.users import Users
from wando.provisioning.v1 import scim_pb2, search_service_pb2_grpc
from wando.provisioning.v1 import search_service_pb2 as pb

USERS = ResourceEndpoints.of(Users)
GROUPS = ResourceEndpoints.of(Groups)


class SearchCalls:
    """The core's SearchService, on the core channel's current channel (a new
    one after a TLS rotation: gateway.corechannel)."""

    def __init__(self, core: CoreChannel) -> None:
        self._core = core
        self._channel: grpc.aio.Channel | None = None
        self._stub: search_service_pb2_grpc.SearchServiceAsyncStub | None = None

    @property
    def stub(self) -> search_service_pb2_grpc.SearchServiceAsyncStub:
        if self._stub is None or self._channel is not self._core.channel:
            self._channel = self._core.channel
            self._stub = search_service_pb2_grpc.SearchServiceStub(self._channel)
        return self._stub

    async def search(
        self, query: scim_pb2.ListQuery, call: Call, *, exclude_members: bool
    ) -> tuple[Sequence[pb.SearchResult], int, int]:
        request = pb.SearchResourcesRequest(query=query, exclude_members=exclude_members)
        response = await call.invoke(self.stub.SearchResources, request)
        return response.results, response.total_results, response.start_index


async def search(request: web.Request) -> web.Response:
    body = await request_body(request)
    if isinstance(body.get("filter"), str):
        request[SEARCH_FILTER] = str(body["filter"])  # for its activity entry
    query = list_query_from_search_request(body)
    results, total, start_index = await request.config_dict[SEARCH].search(
        mapping.list_query_to_proto(query),
        core_call(request),
        exclude_members=query.projection.excludes("members", GROUP_URN),
    )
    rendered = [
        USERS.render(request, result.user, query.projection)
        if result.HasField("user")
        else GROUPS.render(request, result.group, query.projection)
        for result in results
    ]
    return scim_response(mapping.list_response(rendered, total, start_index))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/.search", search)
