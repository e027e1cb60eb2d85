"""Organisations: SQL, row → proto, and lookup by id or slug."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from core import paging
from wando.provisioning.v1 import organization_pb2

if TYPE_CHECKING:
    from core.db import Conn
from core.errors import AlreadyExists, InvalidArgument, NotFound

SLUG = re.compile(r"^[a-z][a-z0-9-]{1,62}$")

COLUMNS = "org_id, slug, display_name, created_at"

# the organisation and its role-change counter, together
INSERT_ORGANIZATION = f"""
WITH org AS (
    INSERT INTO organizations (org_id, slug, display_name)
    VALUES ($1, $2, $3)
    RETURNING {COLUMNS}
), counter AS (
    INSERT INTO role_counters (org_id) SELECT org_id FROM org
)
SELECT * FROM org
"""

SELECT_BY_ID = f"SELECT {COLUMNS} FROM organizations WHERE org_id = $1"

SELECT_BY_SLUG = f"SELECT {COLUMNS} FROM organizations WHERE slug = $1"

SELECT_PAGE = f"""
SELECT {COLUMNS} FROM organizations
WHERE ($1::timestamptz IS NULL OR (created_at, org_id) > ($1, $2::uuid))
ORDER BY created_at, org_id
LIMIT $3
"""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime | None) -> Timestamp | None:
    """A timestamptz as a proto Timestamp (Timestamp.FromDatetime's calendar
    arithmetic is a tenth of a page of users' core time; this is exact too)."""
    if value is None:
        return None
    since = value - _EPOCH  # a normalised timedelta: seconds and microseconds ≥ 0
    return Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)


def to_proto(row: asyncpg.Record) -> organization_pb2.Organization:
    return organization_pb2.Organization(
        id=str(row["org_id"]),
        slug=row["slug"],
        display_name=row["display_name"],
        create_time=timestamp(row["created_at"]),
    )


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def create(conn: Conn, slug: str, display_name: str) -> asyncpg.Record:
    if not SLUG.match(slug):
        raise InvalidArgument(
            "slug must be 2 to 63 lower-case letters, digits and dashes, starting with a letter",
            field="slug",
        )
    display_name = display_name.strip() or slug
    if len(display_name) > 200:
        raise InvalidArgument("display_name must be at most 200 characters", field="display_name")
    try:
        row = await conn.fetchrow(INSERT_ORGANIZATION, uuid.uuid4(), slug, display_name)
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(
            f"an organisation with slug {slug!r} already exists", field="slug"
        ) from None
    assert row is not None
    return row


async def resolve(conn: Conn, ref: str) -> asyncpg.Record:
    """The organisation named by id or slug, or NotFound."""
    if not ref:
        raise InvalidArgument("organization (id or slug) is required", field="organization")
    as_uuid = parse_uuid(ref)
    row = await conn.fetchrow(SELECT_BY_ID, as_uuid) if as_uuid else None
    if row is None:
        row = await conn.fetchrow(SELECT_BY_SLUG, ref)
    if row is None:
        raise NotFound(f"no organisation {ref!r}", field="organization")
    return row


async def list_page(conn: Conn, size: int, token: str) -> tuple[list[asyncpg.Record], str]:
    size = paging.page_size(size)
    position = paging.decode(token)
    after_time = datetime.fromisoformat(position["t"]) if position else None
    after_id = uuid.UUID(position["i"]) if position else None
    rows = await conn.fetch(SELECT_PAGE, after_time, after_id, size + 1)
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        next_token = paging.encode({"t": last["created_at"].isoformat(), "i": str(last["org_id"])})
    return rows, next_token
