"""Requests aiohttp's HTTP parser refuses before the application sees them: a
request line or a header over its limit, too many headers, a malformed head.

aiohttp answers those itself, from `RequestHandler.handle_error`: a plain-text
400, and a traceback logged at ERROR whose message quotes the first 100 bytes
of the offending line, which for `Authorization: Bearer <token><junk>` is the
token. That method is the only place such a request can be answered (no
middleware runs: there is no request to route), so the gateway's runner makes
connections with ScimRequestHandler, which answers them as every other error
(RFC 7644 §3.12; 414, 431 or 400) and logs one line naming what was refused
and the limit, never any of the refused bytes.

The limits are aiohttp's own handler arguments (`max_line_size`,
`max_field_size`, `max_headers`), set by create_app from the settings.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_request import BaseRequest
from scim2_models import SCIMException

from gateway.errors import error_response

log = logging.getLogger("gateway.protocol")

TOO_MANY_HEADERS = "Too many headers received"  # aiohttp's message, both parsers
_REQUEST_TARGET = re.compile(rb"(?:[A-Z]+ )?(?:/|\*|https?://)", re.IGNORECASE)


class UriTooLong(SCIMException):
    status = 414
    _default_detail = "The request line is too long"


class HeadersTooLarge(SCIMException):
    status = 431
    _default_detail = "A request header is too long, or there are too many"


class MalformedRequest(SCIMException):
    status = 400
    _default_detail = "The request is not valid HTTP/1.1"


@dataclass(frozen=True)
class Limits:
    line: int  # the request target (path and query), bytes
    field: int  # one header, name and value, bytes
    headers: int  # how many headers

    def handler_args(self) -> dict[str, Any]:
        """As aiohttp's RequestHandler takes them (web.Application(handler_args=))."""
        return {
            "max_line_size": self.line,
            "max_field_size": self.field,
            "max_headers": self.headers,
        }


def refusal(exc: HttpProcessingError, limits: Limits) -> tuple[SCIMException, str]:
    """The SCIM error for a refused request head, and what to log about it.
    Reads only the exception's type, its limit and its first byte, never its
    message (which quotes the refused bytes)."""
    if isinstance(exc, LineTooLong):
        if _is_request_target(exc, limits):
            what = f"the request line is longer than {limits.line} bytes"
            return UriTooLong(detail=what), what
        what = f"a header is longer than {limits.field} bytes"
        return HeadersTooLarge(detail=what), what
    if exc.message == TOO_MANY_HEADERS:  # aiohttp's own constant text, not client bytes
        what = f"more than {limits.headers} headers"
        return HeadersTooLarge(detail=f"the request has {what}"), what
    what = f"malformed request ({type(exc).__name__})"
    return MalformedRequest(detail="the request is not valid HTTP/1.1"), what


def _is_request_target(exc: LineTooLong, limits: Limits) -> bool:
    """Whether the line too long was the request line. aiohttp raises with the
    limit it applied, which tells when the two limits differ; when they are
    equal, by its start: a request target ("/…", "*", "http(s)://…"), or with
    aiohttp's pure-Python parser the whole line ("GET /…"), which no header
    line can look like (a header name has no space)."""
    limit = exc.args[1] if len(exc.args) > 1 else None
    if limits.line != limits.field and limit in (limits.line, limits.field):
        return bool(limit == limits.line)
    line = exc.args[0] if exc.args else b""
    start = line.encode("latin-1", "replace") if isinstance(line, str) else bytes(line[:16])
    return _REQUEST_TARGET.match(start[:16]) is not None


class ScimRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, with SCIM errors for refused heads."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        limits = Limits(self.max_line_size, self.max_field_size, self.max_headers)
        error, what = refusal(exc, limits)
        # HTTPS or other noise on the first request of a connection: debug, as aiohttp does
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.WARNING
        log.log(level, "refused a request from %s: %s (%d)", request.remote, what, error.status)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already; closing the connection")
        response = error_response(error)
        response.force_close()
        return response


class ScimServer(web.Server):
    """aiohttp's low-level server, making ScimRequestHandler connections."""

    def __call__(self) -> web_protocol.RequestHandler:
        # as web.Server.__call__, with our handler class
        return ScimRequestHandler(self, loop=self._loop, **self._kwargs)


class ScimAppRunner(web.AppRunner):
    """web.AppRunner whose server answers refused heads with SCIM errors."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return ScimServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
