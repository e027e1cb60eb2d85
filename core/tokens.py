"""SCIM bearer tokens: issue, list, revoke, authenticate.

A secret looks like ``wando_scim_<43 base62 chars><6 base62 chars>``: a fixed
prefix secret scanners can match, 256 random bits, and a CRC32 checksum so that
a scanner (and we) can tell a real token from a look-alike without a database.
Only the SHA-256 of the whole secret is stored. Lookup is by that hash, so the
time taken does not depend on how much of a guess matches a real token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

from wando.provisioning.v1 import organization_pb2

if TYPE_CHECKING:
    from core.db import Conn
from core.errors import InvalidArgument, NotFound, Unauthenticated
from core.organizations import parse_uuid, timestamp

PREFIX = "wando_scim_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # 62**43 > 2**256
_CHECK_LEN = 6  # 62**6 > 2**32
SECRET_LEN = len(PREFIX) + _BODY_LEN + _CHECK_LEN
DISPLAY_LEN = len(PREFIX) + 4

# how long a successful authentication is remembered by one process; a revoked
# token stops working on every replica within this time
AUTH_CACHE_SECONDS = 0.5
LAST_USED_RESOLUTION_SECONDS = 60

COLUMNS = (
    "org_id, token_id, display_prefix, description, created_at, expires_at, "
    "last_used_at, revoked_at"
)

INSERT_TOKEN = f"""
INSERT INTO scim_tokens (org_id, token_id, token_hash, display_prefix, description, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {COLUMNS}
"""

SELECT_FOR_ORG = f"""
SELECT {COLUMNS} FROM scim_tokens
WHERE org_id = $1 AND ($2 OR revoked_at IS NULL)
ORDER BY created_at DESC, token_id
"""

REVOKE_TOKEN = f"""
UPDATE scim_tokens SET revoked_at = coalesce(revoked_at, clock_timestamp())
WHERE org_id = $1 AND token_id = $2
RETURNING {COLUMNS}
"""

SELECT_LIVE_BY_HASH = """
SELECT t.org_id, t.token_id, t.token_hash, t.last_used_at
FROM scim_tokens t
WHERE t.token_hash = $1
  AND t.revoked_at IS NULL
  AND (t.expires_at IS NULL OR t.expires_at > clock_timestamp())
"""

TOUCH_LAST_USED = """
UPDATE scim_tokens SET last_used_at = clock_timestamp()
WHERE org_id = $1 AND token_id = $2
"""


def _base62(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_LEN)


def new_secret() -> str:
    body = _base62(secrets.randbits(256), _BODY_LEN)
    return PREFIX + body + _checksum(body)


def well_formed(secret: str) -> bool:
    if len(secret) != SECRET_LEN or not secret.startswith(PREFIX):
        return False
    body, check = secret[len(PREFIX) : -_CHECK_LEN], secret[-_CHECK_LEN:]
    return hmac.compare_digest(_checksum(body), check)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def to_proto(row: asyncpg.Record) -> organization_pb2.ScimToken:
    return organization_pb2.ScimToken(
        id=str(row["token_id"]),
        organization_id=str(row["org_id"]),
        display_prefix=row["display_prefix"] + "…",
        description=row["description"],
        create_time=timestamp(row["created_at"]),
        expire_time=timestamp(row["expires_at"]),
        last_used_time=timestamp(row["last_used_at"]),
        revoke_time=timestamp(row["revoked_at"]),
    )


async def issue(
    conn: Conn, org_id: uuid.UUID, description: str, expires_at: datetime | None
) -> tuple[asyncpg.Record, str]:
    if len(description) > 200:
        raise InvalidArgument("description must be at most 200 characters", field="description")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise InvalidArgument("expire_time must be in the future", field="expire_time")
    secret = new_secret()
    row = await conn.fetchrow(
        INSERT_TOKEN,
        org_id,
        uuid.uuid4(),
        hash_secret(secret),
        secret[:DISPLAY_LEN],
        description,
        expires_at,
    )
    assert row is not None
    return row, secret


async def list_for(conn: Conn, org_id: uuid.UUID, show_revoked: bool) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(SELECT_FOR_ORG, org_id, show_revoked)
    return rows


async def revoke(conn: Conn, org_id: uuid.UUID, token_id: str) -> asyncpg.Record:
    as_uuid = parse_uuid(token_id)
    row = await conn.fetchrow(REVOKE_TOKEN, org_id, as_uuid) if as_uuid else None
    if row is None:
        raise NotFound(f"no token {token_id!r} in this organisation", field="token_id")
    return row


@dataclass(frozen=True)
class Principal:
    """Who a SCIM call acts as: an organisation, through one of its tokens."""

    org_id: uuid.UUID
    token_id: uuid.UUID


INVALID_TOKEN = "the bearer token is missing, malformed, unknown, expired or revoked"  # noqa: S105


class Authenticator:
    """Authenticates SCIM secrets, remembering successes for AUTH_CACHE_SECONDS."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    async def authenticate(self, secret: str) -> Principal:
        if not well_formed(secret):
            raise Unauthenticated(INVALID_TOKEN)
        digest = hash_secret(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(SELECT_LIVE_BY_HASH, digest)
            if row is None or not hmac.compare_digest(row["token_hash"], digest):
                self._cache.pop(digest, None)
                raise Unauthenticated(INVALID_TOKEN)
            last_used = row["last_used_at"]
            if (
                last_used is None
                or (datetime.now(UTC) - last_used).total_seconds() > LAST_USED_RESOLUTION_SECONDS
            ):
                await conn.execute(TOUCH_LAST_USED, row["org_id"], row["token_id"])
        principal = Principal(row["org_id"], row["token_id"])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (principal, now + AUTH_CACHE_SECONDS)
        return principal
