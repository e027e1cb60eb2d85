"""SCIM JSON responses: one content type, compact UTF-8 JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

SCIM_CONTENT_TYPE = "application/scim+json; charset=utf-8"


def scim_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    try:  # the body is built from the core's documents: no NaN (core.wirejson)
        data = orjson.dumps(body)
    except orjson.JSONEncodeError:  # an integer of more than 64 bits
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(
        body=data,
        status=status,
        headers={"Content-Type": SCIM_CONTENT_TYPE, **(headers or {})},
    )


def no_content(headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=204, headers=headers)
