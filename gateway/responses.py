"""SCIM JSON responses: one content type, compact UTF-8 JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

SCIM_CONTENT_TYPE = "application/scim+json; charset=utf-8"


def scim_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return web.Response(
        body=data.encode(),
        status=status,
        headers={"Content-Type": SCIM_CONTENT_TYPE, **(headers or {})},
    )


def no_content() -> web.Response:
    return web.Response(status=204)
