"""Paging cursors (RFC 9865): opaque, signed, expiring keyset positions.

A cursor names the sort key of a listed row (core.listing) and which way to
read from it: rows after it (a nextCursor) or before it (a previousCursor).
It is base64url JSON (`{"k": [...], "b": backward, "e": expiry}`) and an
HMAC-SHA256 over the organisation, the query's scope (resource type, filter,
sortBy, sortOrder) and that JSON. So a cursor is refused (invalidCursor) if
any byte was changed, if another organisation sends it, or if it is sent with
another filter or sort; and (expiredCursor) once `timeout` seconds passed
since it was issued. The position is checked for shape only after the MAC:
nothing a client invents reaches SQL.

The key is WANDO_CURSOR_SECRET or <data dir>/cursor-secret (core.auth);
every core replica behind one balancer needs the same one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import ExpiredCursor, InvalidCursor

DEFAULT_TIMEOUT_SECONDS = 3600
MAX_CURSOR_LENGTH = 4096  # a sort key of a few hundred characters, base64'd, and a MAC

INVALID = (
    "the cursor is not one this server issued for this organisation and query;"
    " send an empty cursor to start again"
)

# sort key values as JSON: one tag each, so that they come back as the type
# the SQL comparison expects (text, boolean, uuid, timestamptz) or NULL
_ENCODE: tuple[tuple[type, str, Callable[[Any], Any]], ...] = (
    (bool, "b", bool),
    (str, "s", str),
    (uuid.UUID, "u", str),  # asyncpg's UUID too
    (datetime, "t", datetime.isoformat),
)
_DECODE: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "s": (str, str),
    "b": (bool, bool),
    "u": (str, uuid.UUID),
    "t": (str, datetime.fromisoformat),
}


@dataclass(frozen=True)
class Position:
    """Where a page starts: just after (or, backward, just before) `key`."""

    key: tuple[Any, ...]
    backward: bool = False


class Cursors:
    """Issues and opens cursors with one server-side key."""

    def __init__(
        self,
        secret: str | bytes,
        timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        self._key = hmac.new(raw, b"wando scim cursor v1", hashlib.sha256).digest()
        self.timeout_seconds = timeout_seconds
        self._clock = clock

    def issue(self, org_id: uuid.UUID, scope: str, position: Position) -> str:
        body = {
            "k": [_encode_value(v) for v in position.key],
            "b": position.backward,
            "e": int(self._clock()) + self.timeout_seconds,
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{_b64(self._mac(org_id, scope, payload))}"

    def open(self, token: str, org_id: uuid.UUID, scope: str) -> Position:
        """The position of a cursor this server issued for this organisation
        and scope. Raises InvalidCursor or ExpiredCursor."""
        payload, dot, mac = token.partition(".")
        if not dot or len(token) > MAX_CURSOR_LENGTH:
            raise InvalidCursor(INVALID, field="cursor")
        try:
            sent = _unb64(mac)
        except (binascii.Error, ValueError):
            raise InvalidCursor(INVALID, field="cursor") from None
        if not hmac.compare_digest(sent, self._mac(org_id, scope, payload)):
            raise InvalidCursor(INVALID, field="cursor")
        body = json.loads(_unb64(payload))  # ours, since the MAC holds
        if body["e"] < self._clock():
            raise ExpiredCursor(
                f"the cursor expired (cursors last {self.timeout_seconds} seconds between"
                " pages); send an empty cursor to start again",
                field="cursor",
            )
        return Position(tuple(_decode_value(v) for v in body["k"]), bool(body["b"]))

    def _mac(self, org_id: uuid.UUID, scope: str, payload: str) -> bytes:
        message = b"\x00".join((org_id.bytes, scope.encode(), payload.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()


def scope(*parts: str) -> str:
    """What a cursor is good for: the parts of a query it must be sent with."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _encode_value(value: Any) -> Any:
    if value is None:
        return None
    for kind, tag, convert in _ENCODE:
        if isinstance(value, kind):
            return [tag, convert(value)]
    raise TypeError(f"no cursor encoding for {type(value).__name__}")


def _decode_value(value: Sequence[Any] | None) -> Any:
    if value is None:
        return None
    tag, raw = value
    _, convert = _DECODE[tag]
    return convert(raw)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
