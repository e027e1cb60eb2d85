"""Audit events: one row per write, in the write's own transaction.

record() and record_admin() write INSERT_EVENT. The hot SCIM writes carry the
same insert inside their own statement instead, to save a round trip:
users.INSERT_USERS, users.UPDATE_USER, groups.INSERT_GROUP and
groups.UPDATE_GROUP."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import asyncpg

from core import paging
from core.errors import InvalidArgument
from core.organizations import timestamp
from wando.provisioning.v1 import audit_pb2

if TYPE_CHECKING:
    from core.db import Conn
    from core.tokens import Principal

INSERT_EVENT = """
INSERT INTO audit_events (org_id, token_id, actor, action, resource_type, resource_id, changed)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""


async def record(
    conn: Conn,
    principal: Principal,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID | str,
    changed: list[str] | None = None,
) -> None:
    """Record that `principal` did `action` to a resource; `changed` names the
    attributes touched (never their values)."""
    await conn.execute(
        INSERT_EVENT,
        principal.org_id,
        principal.token_id,
        "scim",
        action,
        resource_type,
        str(resource_id),
        sorted(changed or []),
    )


async def record_admin(
    conn: Conn,
    org_id: uuid.UUID,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID | str,
    changed: list[str] | None = None,
) -> None:
    """Record a change made by Wando staff through the AdminService."""
    await conn.execute(
        INSERT_EVENT,
        org_id,
        None,
        "admin",
        action,
        resource_type,
        str(resource_id),
        sorted(changed or []),
    )


SELECT_EVENTS = """
SELECT event_id, org_id, occurred_at, token_id, actor, action, resource_type, resource_id, changed
FROM audit_events
WHERE org_id = $1
  AND ($2 = '' OR resource_type = $2)
  AND ($3 = '' OR resource_id = $3)
  AND ($4::bigint IS NULL OR event_id < $4)
ORDER BY event_id DESC
LIMIT $5
"""


def to_proto(row: asyncpg.Record) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        id=row["event_id"],
        organization_id=str(row["org_id"]),
        occur_time=timestamp(row["occurred_at"]),
        token_id=str(row["token_id"]) if row["token_id"] else "",
        actor=row["actor"],
        action=row["action"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        changed_attributes=list(row["changed"]),
    )


async def list_page(
    conn: Conn, org_id: uuid.UUID, resource_type: str, resource_id: str, size: int, token: str
) -> tuple[list[asyncpg.Record], str]:
    """A page of events, newest first, and the token of the next (older) page."""
    size = paging.page_size(size)
    position = paging.decode(token)
    before = position.get("e") if position else None
    if before is not None and not isinstance(before, int):
        raise InvalidArgument("page_token is not one this server issued", field="page_token")
    rows = await conn.fetch(SELECT_EVENTS, org_id, resource_type, resource_id, before, size + 1)
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        next_token = paging.encode({"e": rows[-1]["event_id"]})
    return rows, next_token
