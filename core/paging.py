"""Opaque page tokens (AIP-158): a keyset position, base64url-encoded JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from core.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidArgument(
            "page_token is not one this server issued", field="page_token"
        ) from None
    if not isinstance(position, dict):
        raise InvalidArgument("page_token is not one this server issued", field="page_token")
    return position
