"""SCIM JSON responses: one content type, compact UTF-8 JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from common import wirejson

SCIM_CONTENT_TYPE = "application/scim+json; charset=utf-8"


def scim_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        # built from the core's documents and our own values: no NaN (common.wirejson)
        body=wirejson.dumps_stored_bytes(body),
        status=status,
        headers={"Content-Type": SCIM_CONTENT_TYPE, **(headers or {})},
    )


def no_content(headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=204, headers=headers)
