"""Taking a resource's row for a write: its id, its row lock, its version check."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import asyncpg

from core.errors import NotFound, VersionMismatch
from core.organizations import parse_uuid
from core.representation import etag_matches

if TYPE_CHECKING:
    from core.db import Conn


def resource_id(raw: str, kind: str) -> uuid.UUID:
    """Parse a resource id; anything that is not one of ours is simply not found."""
    parsed = parse_uuid(raw)
    if parsed is None:
        raise NotFound(f"no {kind} with id {raw!r}", field="id")
    return parsed


async def fetch(
    conn: Conn, select: str, org_id: uuid.UUID, raw_id: str, kind: str
) -> asyncpg.Record:
    """The resource's row, or NotFound (also for another organisation's id)."""
    row = await conn.fetchrow(select, org_id, resource_id(raw_id, kind))
    if row is None:
        raise NotFound(f"no {kind} with id {raw_id!r}", field="id")
    return row


async def lock(
    conn: Conn,
    select_for_update: str,
    org_id: uuid.UUID,
    raw_id: str,
    expected_etag: str,
    kind: str,
) -> asyncpg.Record:
    """The resource's row, locked for this transaction, at the expected version
    (If-Match) when one is given."""
    return await fetch_at_version(conn, select_for_update, org_id, raw_id, expected_etag, kind)


async def fetch_at_version(
    conn: Conn, select: str, org_id: uuid.UUID, raw_id: str, expected_etag: str, kind: str
) -> asyncpg.Record:
    """The resource's row at the expected version (If-Match) when one is given;
    locked only if `select` locks it."""
    row = await fetch(conn, select, org_id, raw_id, kind)
    if expected_etag and not etag_matches(expected_etag, row["version"]):
        raise VersionMismatch(
            f'the {kind} changed since version {expected_etag} (now W/"{row["version"]}")',
            field="etag",
        )
    return row
