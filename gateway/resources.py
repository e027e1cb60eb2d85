"""The SCIM resource endpoints (RFC 7644 §3.3 to §3.6), once for every resource
type: list, search, create, get, replace, patch, delete.

A resource type (gateway.users, gateway.groups) only says how to call its
core service; everything HTTP is here. Failed core calls surface as
grpc.aio.AioRpcError and are rendered by the error middleware.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import quote

import grpc
from aiohttp import web

from common import tracing
from gateway import body, mapping, metrics, traces
from gateway.keys import (
    AUTH_FAILURES,
    CALL_METADATA,
    CORE,
    REQUEST_ID,
    RESOURCE_ID,
    SEARCH_FILTER,
    SETTINGS,
    TOKEN,
)
from gateway.query import (
    ListQuery,
    Projection,
    list_query_from_params,
    list_query_from_search_request,
    projection_from_params,
)
from gateway.responses import no_content, scim_response
from wando.provisioning.v1 import scim_pb2

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True)
class Call:
    """How to call the core for one HTTP request."""

    metadata: tuple[tuple[str, str], ...]
    timeout: float
    token: str = ""  # the bearer token in `metadata`
    # told of each token the core accepted (gateway.authlimit.AuthFailures.vouch)
    on_accepted: Callable[[str], None] | None = None

    async def invoke(
        self, method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req
    ) -> Resp:
        """One call to the core (a stub's method), timed by RPC (gateway.metrics),
        traced when traces are exported (gateway.traces)."""
        metadata, span = self.metadata, None
        tracer = tracing.tracer
        if tracer is not None:
            span, metadata = traces.start_core_call(tracer, method, metadata)
        started = time.perf_counter()
        code = "OK"
        try:
            response = await method(request, metadata=metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            raise
        finally:
            metrics.observe_core_call(method, code, time.perf_counter() - started)
            if span is not None:
                traces.end_core_call(span, code)
        if self.on_accepted is not None:
            self.on_accepted(self.token)
        return response


class ResourceCalls(Protocol):
    """One resource type's core service, as the endpoints need it."""

    name: str  # "User"
    endpoint: str  # "Users"
    core_urn: str
    has_members: bool

    def __init__(self, channel: grpc.aio.Channel) -> None: ...

    async def create(
        self, body_json: str, call: Call, *, exclude_members: bool
    ) -> mapping.CoreResource: ...

    async def get(self, id: str, call: Call, *, exclude_members: bool) -> mapping.CoreResource: ...

    async def list(
        self, query: scim_pb2.ListQuery, call: Call, *, exclude_members: bool
    ) -> mapping.Listing: ...

    async def replace(
        self, id: str, body_json: str, etag: str, call: Call, *, exclude_members: bool
    ) -> mapping.CoreResource: ...

    async def patch(
        self,
        id: str,
        operations: Sequence[scim_pb2.PatchOperation],
        etag: str,
        call: Call,
        *,
        exclude_members: bool,
        etag_only: bool = False,  # only id and etag are needed back (groups)
    ) -> mapping.CoreResource: ...

    async def delete(self, id: str, etag: str, call: Call) -> None: ...


_URL_SAFE_ID = re.compile(r"[0-9A-Za-z-]+")


class ResourceEndpoints:
    """The HTTP handlers of one resource type, e.g. /Users and /Users/{id}."""

    def __init__(self, name: str, endpoint: str, core_urn: str, has_members: bool) -> None:
        self.name = name
        self.endpoint = endpoint
        self.core_urn = core_urn
        self.has_members = has_members

    @classmethod
    def of(cls, calls: type[ResourceCalls]) -> ResourceEndpoints:
        return cls(calls.name, calls.endpoint, calls.core_urn, calls.has_members)

    def add_routes(self, app: web.Application) -> None:
        collection = f"/{self.endpoint}"
        item = f"{collection}/{{id}}"
        app.router.add_get(collection, self.list)
        app.router.add_post(collection, self.create)
        app.router.add_post(f"{collection}/.search", self.search)
        app.router.add_get(item, self.get)
        app.router.add_put(item, self.replace)
        app.router.add_patch(item, self.patch)
        app.router.add_delete(item, self.delete)

    # the handlers

    async def list(self, request: web.Request) -> web.Response:
        return await self._list(request, list_query_from_params(request.query))

    async def search(self, request: web.Request) -> web.Response:
        search = await self._body(request)
        if isinstance(search.get("filter"), str):
            request[SEARCH_FILTER] = str(search["filter"])
        return await self._list(request, list_query_from_search_request(search))

    async def create(self, request: web.Request) -> web.Response:
        response = await self.create_from(
            request, await self._body(request), projection_from_params(request.query)
        )
        # the new resource's id, for its activity entry (gateway.activity)
        request[RESOURCE_ID] = response.headers["Location"].rsplit("/", 1)[-1]
        return response

    async def get(self, request: web.Request) -> web.Response:
        projection = projection_from_params(request.query)
        resource = await self._core(request).get(
            request.match_info["id"],
            self._call(request),
            exclude_members=self._excludes_members(projection),
        )
        return self._one(request, resource, projection)

    async def replace(self, request: web.Request) -> web.Response:
        return await self.replace_at(
            request,
            request.match_info["id"],
            await self._body(request),
            _if_match(request),
            projection_from_params(request.query),
        )

    async def patch(self, request: web.Request) -> web.Response:
        return await self.patch_at(
            request,
            request.match_info["id"],
            await self._body(request),
            _if_match(request),
            projection_from_params(request.query),
        )

    async def delete(self, request: web.Request) -> web.Response:
        return await self.delete_at(request, request.match_info["id"], _if_match(request))

    # the writes, once for a request of their own and for a /Bulk operation
    # (gateway.bulk): `request` carries the token and the request id

    async def create_from(
        self, request: web.Request, body: dict[str, object], projection: Projection
    ) -> web.Response:
        resource = await self._core(request).create(
            mapping.resource_json_from_scim(body),
            self._call(request),
            exclude_members=self._excludes_members(projection),
        )
        return self._one(request, resource, projection, status=201)

    async def replace_at(
        self,
        request: web.Request,
        id: str,
        body: dict[str, object],
        if_match: str,
        projection: Projection,
    ) -> web.Response:
        resource = await self._core(request).replace(
            id,
            mapping.resource_json_from_scim(body),
            if_match,
            self._call(request),
            exclude_members=self._excludes_members(projection),
        )
        return self._one(request, resource, projection)

    async def patch_at(
        self,
        request: web.Request,
        id: str,
        body: dict[str, object],
        if_match: str,
        projection: Projection,
    ) -> web.Response:
        operations = mapping.patch_operations_from_scim(body)
        # A group's PATCH answers 204 unless the client asks for a representation
        # (attributes or excludedAttributes): RFC 7644 §3.5.2 allows it, Entra
        # prefers it, Okta takes it, and with the member list every membership
        # change of a large group would answer with the whole group.
        quiet = self.has_members and not (projection.attributes or projection.excluded_attributes)
        resource = await self._core(request).patch(
            id,
            operations,
            if_match,
            self._call(request),
            exclude_members=quiet or self._excludes_members(projection),
            etag_only=quiet,
        )
        if quiet:
            return no_content(headers={"ETag": resource.etag} if resource.etag else None)
        return self._one(request, resource, projection)

    async def delete_at(self, request: web.Request, id: str, if_match: str) -> web.Response:
        await self._core(request).delete(id, if_match, self._call(request))
        return no_content()

    # the parts they share

    async def _list(self, request: web.Request, query: ListQuery) -> web.Response:
        listing = await self._core(request).list(
            mapping.list_query_to_proto(query),
            self._call(request),
            exclude_members=self._excludes_members(query.projection),
        )
        rendered = [self.render(request, r, query.projection) for r in listing.resources]
        if query.cursor is not None:
            return scim_response(mapping.cursor_list_response(rendered, listing))
        return scim_response(mapping.list_response(rendered, listing.total, listing.start_index))

    def _one(
        self,
        request: web.Request,
        resource: mapping.CoreResource,
        projection: Projection,
        *,
        status: int = 200,
    ) -> web.Response:
        headers = {"ETag": resource.etag} if resource.etag else {}
        if status == 201:
            headers["Location"] = self.location(request, resource.id)
        body = self.render(request, resource, projection)
        return scim_response(body, status=status, headers=headers)

    def render(
        self, request: web.Request, resource: mapping.CoreResource, projection: Projection
    ) -> dict[str, object]:
        """A resource's SCIM JSON, as every endpoint answers it."""
        return mapping.scim_from_resource(
            resource,
            base_url=request.config_dict[SETTINGS].scim_base_url,
            location=self.location(request, resource.id),
            projection=projection,
            core_urn=self.core_urn,
        )

    def location(self, request: web.Request, id: str) -> str:
        base = request.config_dict[SETTINGS].scim_base_url
        if not _URL_SAFE_ID.fullmatch(id):  # the core's ids are UUIDs; quote() is slow
            id = quote(id, safe="")
        return f"{base}/{self.endpoint}/{id}"

    def _excludes_members(self, projection: Projection) -> bool:
        return self.has_members and projection.excludes("members", self.core_urn)

    def _core(self, request: web.Request) -> ResourceCalls:
        return request.config_dict[CORE].calls[self.endpoint]

    def _call(self, request: web.Request) -> Call:
        return core_call(request)

    async def _body(self, request: web.Request) -> dict[str, object]:
        return await request_body(request)


def core_call(request: web.Request) -> Call:
    """How to call the core for this request: its token, its request id, and
    the organisations' rate limit to charge (core.ratelimit)."""
    failures = request.config_dict[AUTH_FAILURES]
    return Call(
        metadata=(
            ("authorization", f"Bearer {request[TOKEN]}"),
            ("x-request-id", request[REQUEST_ID]),
            *request.config_dict[CALL_METADATA],
        ),
        timeout=request.config_dict[SETTINGS].core_timeout_seconds,
        token=request[TOKEN],
        on_accepted=failures.vouch if failures.enabled else None,
    )


async def request_body(request: web.Request) -> dict[str, object]:
    """The request's JSON object, within the body size limit."""
    return await body.json_object(request, request.config_dict[SETTINGS].max_body_bytes)


def _if_match(request: web.Request) -> str:
    """The If-Match precondition for the core; '*' (any version) is no condition."""
    value = request.headers.get("If-Match", "").strip()
    return "" if value == "*" else value
