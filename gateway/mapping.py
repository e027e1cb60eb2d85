"""SCIM JSON ⇄ the core's protos: the one mapping at the gateway's boundary,
each function named by its direction.

The JSON text inside the protos is common.wirejson's, shared with the core.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from scim2_models import InvalidSyntaxException

from common import wirejson
from gateway.projection import project
from gateway.query import ListQuery, Projection
from wando.provisioning.v1 import scim_pb2

LIST_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

CoreResource = scim_pb2.User | scim_pb2.Group


@dataclass(frozen=True)
class Listing:
    """A page of a ListUsers / ListGroups answer."""

    resources: Sequence[CoreResource]
    total: int
    start_index: int
    next_cursor: str = ""  # cursor paging (RFC 9865) only
    previous_cursor: str = ""


def resource_json_from_scim(body: dict[str, Any]) -> str:
    """A request's SCIM resource, for user_json / group_json."""
    return wirejson.dumps(body)


def scim_from_resource_json(text: str) -> dict[str, Any]:
    """A core resource's SCIM JSON (its resource_json: an object, as the core
    writes it)."""
    value = wirejson.parse(text)
    if not isinstance(value, dict):
        raise ValueError("the core sent a resource_json that is not a JSON object")
    return value


_SORT_ORDERS = {
    "": scim_pb2.SORT_ORDER_UNSPECIFIED,
    "ascending": scim_pb2.SORT_ORDER_ASCENDING,
    "descending": scim_pb2.SORT_ORDER_DESCENDING,
}


def patch_operations_from_scim(body: dict[str, Any]) -> list[scim_pb2.PatchOperation]:
    """The operations of a PatchOp body, forwarded as sent; only the envelope
    is checked here (an `Operations` list of objects with a string `op`)."""
    operations = _member(body, "operations")
    if not isinstance(operations, list):
        raise InvalidSyntaxException(
            detail=f'a PATCH body must be a {PATCH_OP_URN} message with an "Operations" list'
        )
    out: list[scim_pb2.PatchOperation] = []
    for index, raw in enumerate(operations):
        if not isinstance(raw, dict):
            raise InvalidSyntaxException(detail=f"Operations[{index}] must be an object")
        op = _member(raw, "op")
        if not isinstance(op, str) or not op:
            raise InvalidSyntaxException(detail=f'Operations[{index}] needs an "op" string')
        path = _member(raw, "path")
        if path is not None and not isinstance(path, str):
            raise InvalidSyntaxException(detail=f'Operations[{index}]: "path" must be a string')
        operation = scim_pb2.PatchOperation(op=op, path=path or "")
        if _has_member(raw, "value"):
            operation.value_json = wirejson.dumps(_member(raw, "value"))
        out.append(operation)
    return out


def _has_member(obj: dict[str, Any], name: str) -> bool:
    return any(key.lower() == name for key in obj)


def _member(obj: dict[str, Any], name: str) -> Any:
    """obj[name], the key matched without regard to case."""
    for key, value in obj.items():
        if key.lower() == name:
            return value
    return None


def list_query_to_proto(query: ListQuery) -> scim_pb2.ListQuery:
    message = scim_pb2.ListQuery(
        filter=query.filter,
        start_index=query.start_index,
        sort_by=query.sort_by,
        sort_order=_SORT_ORDERS[query.sort_order],
    )
    if query.count is not None:
        message.count = query.count
    if query.cursor is not None:
        message.cursor = query.cursor
    return message


def scim_from_resource(
    resource: CoreResource,
    *,
    base_url: str,
    location: str,
    projection: Projection,
    core_urn: str,
) -> dict[str, Any]:
    """The SCIM JSON of a core resource: meta.location and the `$ref` of each
    member and group added, never a password, projected as the request asked."""
    body = {
        key: value
        for key, value in scim_from_resource_json(resource.resource_json).items()
        if key.lower() != "password"
    }
    meta = body.pop("meta", None)
    body["meta"] = {**(meta if isinstance(meta, dict) else {}), "location": location}
    _add_references(body, base_url)
    return project(_in_reading_order(body), projection, core_urn)


def _add_references(body: dict[str, Any], base_url: str) -> None:
    """`$ref` (RFC 7643 §4.1.2, §4.2) on a Group's `members` and a User's
    `groups`, as the core renders them: the resource's public URL, as
    meta.location. One key per entry, in place: it runs for each member of a
    10,000-member group."""
    users, groups = f"{base_url}/Users/", f"{base_url}/Groups/"
    for entry in _entries(body.get("members")):
        entry["$ref"] = (groups if entry.get("type") == "Group" else users) + entry["value"]
    for entry in _entries(body.get("groups")):
        entry["$ref"] = groups + entry["value"]


def _entries(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        for entry in value:
            if isinstance(entry, dict) and isinstance(entry.get("value"), str):
                yield entry


_FIRST = ("schemas", "id", "externalid")


def _in_reading_order(body: dict[str, Any]) -> dict[str, Any]:
    """schemas, id and externalId first, extensions and meta last; what people
    expect to read, though no client depends on it. One pass, no sort: it
    runs for every resource of every page."""
    first: dict[str, str] = {}
    middle: list[str] = []
    extensions: list[str] = []
    last: list[str] = []
    for key in body:
        lowered = key.lower()
        if lowered in _FIRST:
            first[lowered] = key
        elif lowered == "meta":
            last.append(key)
        elif lowered.startswith("urn:"):
            extensions.append(key)
        else:
            middle.append(key)
    keys = [first[k] for k in _FIRST if k in first] + middle + extensions + last
    return {key: body[key] for key in keys}


def list_response(resources: list[dict[str, Any]], total: int, start_index: int) -> dict[str, Any]:
    """An RFC 7644 §3.4.2 ListResponse: integers, and Resources always a list."""
    return {
        "schemas": [LIST_RESPONSE_URN],
        "totalResults": int(total),
        "startIndex": int(start_index),
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


def cursor_list_response(resources: list[dict[str, Any]], listing: Listing) -> dict[str, Any]:
    """A ListResponse of cursor paging (RFC 9865 §2.2): no startIndex; the
    cursors of the pages around this one, where there are such pages."""
    body: dict[str, Any] = {
        "schemas": [LIST_RESPONSE_URN],
        "totalResults": int(listing.total),
        "itemsPerPage": len(resources),
    }
    if listing.next_cursor:
        body["nextCursor"] = listing.next_cursor
    if listing.previous_cursor:
        body["previousCursor"] = listing.previous_cursor
    body["Resources"] = resources
    return body
