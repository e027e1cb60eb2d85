"""Rows → SCIM JSON and proto messages: the one place resources are rendered.

The stored document (see core.documents) becomes the SCIM representation by
adding schemas, id, the computed groups/members and meta. meta.location is
left to the gateway, which knows the public URL.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from common import wirejson
from core.organizations import timestamp
from core.schema import ResourceSchema, group_schema, user_schema
from wando.provisioning.v1 import scim_pb2


def etag(version: int) -> str:
    return f'W/"{version}"'


def etag_matches(expected: str, version: int) -> bool:
    """Whether an If-Match value names this version: `*`, or a comma-separated
    list of entity tags of which any is this one (RFC 9110 §13.1.1; weak
    comparison, so `W/"3"` and `"3"` alike; a bare `3` is taken too). A value
    that is no such list matches nothing."""
    if expected.strip() == "*":
        return True
    if not _TAG_LIST.fullmatch(expected):
        return False
    wanted = str(version)
    return any(_opaque(tag) == wanted for tag in _ENTITY_TAG.findall(expected))


# an entity tag, `W/"…"` or `"…"` (an opaque tag may hold commas), or,
# leniently, a bare token; a list of them, empty elements allowed (RFC 9110 §5.6.1)
_TAG = r'(?:W/)?"[^"]*"|[^",\s]+'
_ENTITY_TAG = re.compile(_TAG)
_TAG_LIST = re.compile(rf"\s*(?:{_TAG})?\s*(?:,\s*(?:{_TAG})?\s*)*")


def _opaque(tag: str) -> str:
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag[1:-1] if len(tag) >= 2 and tag[0] == tag[-1] == '"' else tag


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _schemas(schema: ResourceSchema, document: dict[str, Any]) -> list[str]:
    return [schema.core_urn, *(key for key in document if key.startswith("urn:"))]


def _meta(resource_type: str, row: asyncpg.Record) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "created": _iso(row["created_at"]),
        "lastModified": _iso(row["updated_at"]),
        "version": etag(row["version"]),
    }


def user_json(row: asyncpg.Record, groups: list[dict[str, Any]], id: str) -> dict[str, Any]:
    document: dict[str, Any] = row["attributes"]
    resource: dict[str, Any] = {"schemas": _schemas(user_schema(), document), "id": id}
    resource.update(document)  # `active` as assigned: absent once a PATCH removed it
    resource["groups"] = groups
    resource["meta"] = _meta("User", row)
    return resource


def group_json(
    row: asyncpg.Record, members: list[dict[str, Any]] | None, id: str
) -> dict[str, Any]:
    document: dict[str, Any] = row["attributes"]
    resource: dict[str, Any] = {"schemas": _schemas(group_schema(), document), "id": id}
    resource.update(document)
    if members is not None:
        resource["members"] = members
    resource["meta"] = _meta("Group", row)
    return resource


def user_proto(row: asyncpg.Record, groups: list[dict[str, Any]]) -> scim_pb2.User:
    id = str(row["user_id"])  # once: a page renders a hundred
    return scim_pb2.User(
        id=id,
        user_name=row["user_name"],
        external_id=row["external_id"] or "",
        display_name=row["display_name"] or "",
        active=row["active"],
        resource_json=wirejson.dumps_stored(user_json(row, groups, id)),
        etag=etag(row["version"]),
        create_time=timestamp(row["created_at"]),
        update_time=timestamp(row["updated_at"]),
    )


def group_proto(
    row: asyncpg.Record, members: list[dict[str, Any]] | None, member_count: int
) -> scim_pb2.Group:
    id = str(row["group_id"])
    return scim_pb2.Group(
        id=id,
        display_name=row["display_name"],
        external_id=row["external_id"] or "",
        resource_json=wirejson.dumps_stored(group_json(row, members, id)),
        etag=etag(row["version"]),
        create_time=timestamp(row["created_at"]),
        update_time=timestamp(row["updated_at"]),
        member_count=member_count,
    )


def group_ref(group_id: uuid.UUID, display_name: str) -> dict[str, Any]:
    """An entry of a User's `groups`."""
    return {"value": str(group_id), "display": display_name, "type": "direct"}


def member_ref(user_id: uuid.UUID, user_name: str, display_name: str | None) -> dict[str, Any]:
    """An entry of a Group's `members`."""
    return {"value": str(user_id), "display": display_name or user_name, "type": "User"}
