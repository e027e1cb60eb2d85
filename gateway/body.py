"""Request bodies: read within the size limit and parsed as JSON whatever the
Content-Type says (Okta sends application/scim+json or application/json, with
or without charset; some clients send none).

Refused, as SCIM errors: a body over the limit (413), an empty body, bytes
that are not JSON (including NaN and Infinity), JSON nested deeper than
MAX_DEPTH, strings that are not Unicode (lone surrogate escapes), and a top
level that is not an object (400 invalidSyntax).
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web
from scim2_models import InvalidSyntaxException, PayloadTooLargeException

# SCIM itself nests 4 levels (an extension's manager's value); 32 leaves room
# for any extension while bounding the work of every recursive walk of a body
# (normalising, patching, projecting) in the gateway and the core.
MAX_DEPTH = 32


def too_large(limit: int) -> PayloadTooLargeException:
    return PayloadTooLargeException(detail=f"the request body exceeds the limit of {limit} bytes")


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise too_large(limit)
    return bytes(data)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 300:  # beyond a double: no JSON number we could carry
        raise ValueError(f"number out of range: {text[:20]}…")
    return int(text)


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest (iteratively: no recursion limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _lone_surrogate(value: Any) -> str | None:
    """The first string (key or value) holding a lone surrogate, which JSON's
    \\uD800 escapes can spell but UTF-8 (and so protobuf and PostgreSQL) cannot."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
    return None


def parse_json_object(data: bytes) -> dict[str, Any]:
    """The JSON object in `data`, or an invalidSyntax error saying what is wrong."""
    if not data.strip():
        raise InvalidSyntaxException(detail="the request body is empty; send a JSON object")
    try:
        value = json.loads(
            data,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except RecursionError:
        raise InvalidSyntaxException(
            detail=f"the request body nests deeper than {MAX_DEPTH} levels"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSyntaxException(detail=f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidSyntaxException(detail="the request body must be a JSON object")
    if _depth(value) > MAX_DEPTH:
        raise InvalidSyntaxException(
            detail=f"the request body nests deeper than {MAX_DEPTH} levels"
        )
    bad = _lone_surrogate(value)
    if bad is not None:
        shown = json.dumps(bad[:40])
        raise InvalidSyntaxException(
            detail=f"the request body holds a string that is not valid Unicode"
            f" (a lone surrogate escape): {shown}"
        )
    return value


async def json_object(request: web.Request, limit: int) -> dict[str, Any]:
    return parse_json_object(await read_body(request, limit))
