"""/Bulk (RFC 7644 §3.7): many writes in one request, each exactly as if it
were its own request.

An operation (POST, PUT, PATCH or DELETE on /Users, /Groups or one of them)
goes to the very method of gateway.resources.ResourceEndpoints its own
request reaches (create_from, replace_at, patch_at, delete_at), so it has
that request's validation, errors, audit and role changes, and is its own
transaction in the core. The bulk as a whole is not atomic: operations that
succeeded stay done whatever happens to later ones.

- bulkId: a POST names its new resource "bulkId:<id>" for the others, in
  their path (PUT /Users/bulkId:ada) or anywhere in their data (a group's
  members[].value). Operations run in request order, except that one waits
  for the POSTs it names (so a reference to a later operation works); one
  in a circle of references (or naming a bulkId no POST defines, or a POST
  that failed) is answered with an error and not run.
- failOnErrors: after that many failed operations, the rest are not run and
  not in the response.
- Limits: more than maxOperations operations, or a body over
  maxPayloadSize, is 413 tooLarge for the whole request (nothing runs).
- Rate limit: the core charges every operation to the organisation's limit,
  as it charges its own request (core.ratelimit); an operation beyond it
  answers 429.
- An unaccepted bearer token (the core's 401) fails the whole request.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from scim2_models import (
    ConflictException,
    InvalidSyntaxException,
    InvalidValueException,
    NotFoundException,
    PayloadTooLargeException,
    SCIMException,
)

from gateway import body, errors
from gateway.keys import REQUEST_ID, SETTINGS
from gateway.middlewares import bulk_sized
from gateway.query import Projection
from gateway.resources import ResourceEndpoints
from gateway.responses import scim_response

log = logging.getLogger("gateway")

BULK_REQUEST_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
BULK_ID_PREFIX = "bulkId:"
METHODS = ("POST", "PUT", "PATCH", "DELETE")
MAX_BULK_ID_LENGTH = 256


@dataclass
class Operation:
    """One operation as sent, and what planning found wrong with it."""

    index: int
    method: str = ""
    path: str = ""
    bulk_id: str | None = None
    version: str = ""
    data: Any = None
    refs: set[str] = field(default_factory=set)  # the bulkIds it names
    problem: SCIMException | None = None


def _member(obj: dict[str, Any], name: str) -> Any:
    """obj[name], the key matched without regard to case."""
    for key, value in obj.items():
        if key.lower() == name.lower():
            return value
    return None


def _strings(value: Any) -> Iterator[str]:
    """Every string value inside a JSON value (not the keys)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            yield item


def _resolved(value: Any, ids: dict[str, str]) -> Any:
    """`value` with each "bulkId:x" string replaced by the id x was given."""
    if isinstance(value, dict):
        return {k: _resolved(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, ids) for v in value]
    if isinstance(value, str) and value.startswith(BULK_ID_PREFIX):
        return ids.get(value[len(BULK_ID_PREFIX) :], value)
    return value


def _operation(index: int, raw: Any) -> Operation:
    op = Operation(index)
    if not isinstance(raw, dict):
        op.problem = InvalidSyntaxException(detail=f"Operations[{index}] must be an object")
        return op
    method, path = _member(raw, "method"), _member(raw, "path")
    bulk_id, version = _member(raw, "bulkId"), _member(raw, "version")
    op.data = _member(raw, "data")
    if not isinstance(method, str) or method.upper() not in METHODS:
        shown = repr(method)[:40]
        op.problem = InvalidValueException(
            detail=f"Operations[{index}].method must be POST, PUT, PATCH or DELETE, got {shown}"
        )
        return op
    op.method = method.upper()
    if not isinstance(path, str) or not path.startswith("/"):
        op.problem = InvalidValueException(
            detail=f'Operations[{index}].path must be a path such as "/Users" or "/Users/{{id}}"'
        )
        return op
    op.path = path
    if bulk_id is not None and (
        not isinstance(bulk_id, str) or not bulk_id or len(bulk_id) > MAX_BULK_ID_LENGTH
    ):
        op.problem = InvalidValueException(
            detail=f"Operations[{index}].bulkId must be a string of 1 to"
            f" {MAX_BULK_ID_LENGTH} characters"
        )
        return op
    op.bulk_id = bulk_id
    if op.method == "POST" and bulk_id is None:
        op.problem = InvalidValueException(
            detail=f"Operations[{index}] is a POST and needs a bulkId (RFC 7644 §3.7)"
        )
    if version is not None and not isinstance(version, str):
        op.problem = InvalidValueException(detail=f"Operations[{index}].version must be a string")
    op.version = version if isinstance(version, str) and version.strip() != "*" else ""
    op.refs = {s[len(BULK_ID_PREFIX) :] for s in _strings(op.data) if s.startswith(BULK_ID_PREFIX)}
    op.refs |= {
        part[len(BULK_ID_PREFIX) :] for part in path.split("/") if part.startswith(BULK_ID_PREFIX)
    }
    return op


def plan(operations: list[Operation]) -> list[Operation]:
    """The order to run operations in: request order, except that an
    operation comes after the POSTs whose bulkIds it names. Operations
    naming an unknown bulkId get their problem here; those in (or behind) a
    circle of references too, and come last."""
    defined: dict[str, Operation] = {}
    for op in operations:
        if op.problem is None and op.method == "POST" and op.bulk_id is not None:
            if op.bulk_id in defined:
                op.problem = InvalidValueException(
                    detail=f"bulkId {op.bulk_id!r} is used by an earlier operation"
                    f" (Operations[{defined[op.bulk_id].index}])"
                )
            else:
                defined[op.bulk_id] = op
    waiting: dict[int, set[int]] = {}  # index → indexes of the POSTs it waits for
    for op in operations:
        waiting[op.index] = set()
        if op.problem is not None:
            continue  # answered with its problem, in its turn
        unknown = sorted(r for r in op.refs if r not in defined)
        if unknown:
            op.problem = InvalidValueException(
                detail=f"bulkId:{unknown[0]} names no POST of this bulk request"
            )
            continue
        waiting[op.index] = {defined[r].index for r in op.refs}
    by_index = {op.index: op for op in operations}
    # Kahn's algorithm, the lowest index first among the ready ones
    blocks: dict[int, list[int]] = {}
    for index, needs in waiting.items():
        for need in needs:
            blocks.setdefault(need, []).append(index)
    pending = {index: len(needs) for index, needs in waiting.items()}  # naming itself: never 0
    ready = [index for index, n in pending.items() if n == 0]
    heapq.heapify(ready)
    order: list[Operation] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(by_index[index])
        for later in blocks.get(index, []):
            pending[later] -= 1
            if pending[later] == 0:
                heapq.heappush(ready, later)
    placed = {op.index for op in order}
    stuck = [op for op in operations if op.index not in placed]
    for op in stuck:
        op.problem = ConflictException(detail=_circle(op, defined, placed))
    return order + stuck


def _circle(op: Operation, defined: dict[str, Operation], placed: set[int]) -> str:
    """Why `op` cannot run: the circle of bulkId references it is in or behind."""

    def blocked(of: Operation) -> str:
        return sorted(r for r in of.refs if defined[r].index not in placed)[0]

    path = [op]
    while True:
        nxt = defined[blocked(path[-1])]
        if nxt in path:
            start = path.index(nxt)
            circle = " → ".join(f"bulkId:{p.bulk_id}" for p in (*path[start:], nxt))
            if start == 0:
                return f"circular bulkId references: {circle}; not run"
            return (
                f"waits for bulkId:{blocked(op)}, which is in a circle of bulkId"
                f" references ({circle}); not run"
            )
        path.append(nxt)


class Bulk:
    """POST /Bulk, dispatching to the resource endpoints by path."""

    def __init__(self, endpoints: dict[str, ResourceEndpoints]) -> None:
        self.endpoints = endpoints

    async def handle(self, request: web.Request) -> web.Response:
        settings = request.config_dict[SETTINGS]
        try:
            payload = await body.json_object(request, settings.bulk_max_payload_bytes)
        except PayloadTooLargeException:
            raise errors.bulk_payload_too_large(settings.bulk_max_payload_bytes) from None
        operations, fail_on_errors = _envelope(payload, settings.bulk_max_operations)
        ids: dict[str, str] = {}  # bulkId → the id its POST created
        failed: set[str] = set()  # bulkIds whose POST failed
        results: list[dict[str, Any]] = []
        errors_seen = 0
        for op in plan(operations):
            if fail_on_errors is not None and errors_seen >= fail_on_errors:
                break
            result = await self._run(request, op, ids, failed)
            results.append(result)
            if not result["status"].startswith("2"):
                errors_seen += 1
                if op.method == "POST" and op.bulk_id is not None:
                    failed.add(op.bulk_id)
        return scim_response({"schemas": [BULK_RESPONSE_URN], "Operations": results})

    async def _run(
        self, request: web.Request, op: Operation, ids: dict[str, str], failed: set[str]
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"method": op.method or None}
        if op.bulk_id is not None:
            result["bulkId"] = op.bulk_id
        if op.path and op.method != "POST":  # RFC 7644 §3.7.3: all but a POST's failure
            base = request.config_dict[SETTINGS].scim_base_url
            result["location"] = base + "/".join(_resolved(p, ids) for p in op.path.split("/"))
        try:
            if op.problem is not None:
                raise op.problem
            gone = sorted(op.refs & failed)
            if gone:
                raise ConflictException(
                    detail=f"bulkId:{gone[0]} names a POST of this bulk request that failed;"
                    " not run"
                )
            response = await self._dispatch(request, op, ids)
        except SCIMException as exc:
            return _failed(result, exc)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise  # the token: the whole request is refused (gateway.middlewares)
            return _failed(result, errors.from_grpc(exc, request[REQUEST_ID]))
        result["status"] = str(response.status)
        if "Location" in response.headers:  # a POST's new resource
            result["location"] = response.headers["Location"]
            if op.bulk_id is not None:
                ids[op.bulk_id] = result["location"].rsplit("/", 1)[-1]
        if "ETag" in response.headers:
            result["version"] = response.headers["ETag"]
        return {k: v for k, v in result.items() if v is not None}

    async def _dispatch(
        self, request: web.Request, op: Operation, ids: dict[str, str]
    ) -> web.Response:
        """Run one operation through its resource endpoint's own method."""
        parts = op.path.strip("/").split("/")
        endpoint = self.endpoints.get(parts[0])
        if endpoint is None or len(parts) > 2 or not parts[-1]:
            raise NotFoundException(detail=f"no SCIM endpoint at {op.path}")
        if len(parts) == 1:
            if op.method != "POST":
                raise errors.MethodNotAllowed(
                    allowed=("GET", "POST"), detail=f"{op.method} is not allowed on {op.path}"
                )
        elif op.method == "POST":
            raise errors.MethodNotAllowed(
                allowed=("GET", "PUT", "PATCH", "DELETE"),
                detail=f"POST is not allowed on {op.path}",
            )
        id = _resolved(parts[1], ids) if len(parts) == 2 else ""
        if op.method == "DELETE":
            return await endpoint.delete_at(request, id, op.version)
        if not isinstance(op.data, dict):
            raise InvalidSyntaxException(
                detail=f"Operations[{op.index}].data must be a JSON object (the request's body)"
            )
        data = _resolved(op.data, ids)
        if op.method == "POST":
            return await endpoint.create_from(request, data, Projection())
        if op.method == "PUT":
            return await endpoint.replace_at(request, id, data, op.version, Projection())
        return await endpoint.patch_at(request, id, data, op.version, Projection())


def _failed(result: dict[str, Any], exc: SCIMException) -> dict[str, Any]:
    result["status"] = str(exc.status)
    result["response"] = exc.to_error().model_dump()
    return {k: v for k, v in result.items() if v is not None}


def _envelope(payload: dict[str, Any], max_operations: int) -> tuple[list[Operation], int | None]:
    """The operations and failOnErrors of a BulkRequest; errors of the whole request."""
    schemas = _member(payload, "schemas")
    if schemas is not None and (
        not isinstance(schemas, list)
        or BULK_REQUEST_URN.lower() not in {s.lower() for s in schemas if isinstance(s, str)}
    ):
        raise InvalidSyntaxException(detail=f"schemas must contain {BULK_REQUEST_URN}")
    raw = _member(payload, "Operations")
    if not isinstance(raw, list) or not raw:
        raise InvalidSyntaxException(
            detail=f'a bulk request must be a {BULK_REQUEST_URN} with an "Operations" list'
            " of at least one operation"
        )
    if len(raw) > max_operations:
        raise errors.TooLarge(
            detail=f"the bulk request has {len(raw)} operations; maxOperations is {max_operations}"
        )
    fail_on_errors = _member(payload, "failOnErrors")
    whole = isinstance(fail_on_errors, int) and not isinstance(fail_on_errors, bool)
    if fail_on_errors is not None and (not whole or fail_on_errors < 1):
        raise InvalidValueException(detail="failOnErrors must be an integer of at least 1")
    return [_operation(i, op) for i, op in enumerate(raw)], fail_on_errors


def add_routes(app: web.Application, endpoints: dict[str, ResourceEndpoints]) -> None:
    bulk = Bulk(endpoints)

    async def post_bulk(request: web.Request) -> web.Response:
        return await bulk.handle(request)

    app.router.add_post("/Bulk", bulk_sized(post_bulk))
