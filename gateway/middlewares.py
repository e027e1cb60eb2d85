"""Cross-cutting work on every HTTP request, outermost first:

- request_context (root app): a request id (X-Request-Id if the caller sent a
  sane one) for the logs, the core call and the response; one access-log line;
  the request's trace span when traces are exported (gateway.traces).
  With activity on, for a request that presented a bearer token, an
  activity entry (gateway.activity) once it is answered, errors included.
- render_errors (root app): SCIM exceptions, failed core calls (through
  gateway.errors.TABLE), aiohttp's own 404/405/413 and anything unexpected
  become RFC 7644 §3.12 error responses; never a traceback.
- limit_body (SCIM app): a declared Content-Length over the limit (for /Bulk,
  its maxPayloadSize) is 413 before anything is read (gateway.body enforces
  it for chunked bodies).
- authenticate (SCIM app): `Authorization: Bearer <token>`, scheme in any
  case; the token is checked by the core on every call. The reason for a 401
  is logged, the token never. An address with too many failed
  authentications gets 429 first (gateway.authlimit).
The organisations' rate limit is the core's (core.ratelimit): its refusal
comes back as a failed call, rendered 429 with Retry-After through the table.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from scim2_models import Error, NotFoundException, SCIMException, UnauthorizedException

from common import logs, tracing
from gateway import activity, authlimit, errors, metrics, traces
from gateway.body import too_large
from gateway.keys import ACTIVITY, AUTH_FAILURES, FAILURE, REQUEST_ID, SETTINGS, TOKEN

log = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# RFC 6750 §2.1 b64token
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{1,1024}=*")
_PUBLIC = "scim_public"
_BULK = "scim_bulk"


def public(handler: Handler) -> Handler:
    """Mark a handler as needing no bearer token (the discovery endpoints)."""
    setattr(handler, _PUBLIC, True)
    return handler


def bulk_sized(handler: Handler) -> Handler:
    """Mark a handler whose body may be as large as a bulk's maxPayloadSize."""
    setattr(handler, _BULK, True)
    return handler


def request_context(app: web.Application) -> Middleware:
    """The outermost middleware of `app`: request id, access log, metrics and,
    unless WANDO_ACTIVITY=off, the request's activity entry (in this one
    middleware rather than a second: each layer costs every request)."""
    settings = app[SETTINGS]
    prefix, recording = settings.scim_prefix, settings.activity

    @web.middleware
    async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        sent = request.headers.get("X-Request-Id", "")
        request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        request[REQUEST_ID] = request_id
        context = logs.request_id.set(request_id)
        started = time.perf_counter()
        status = 500
        tracer = tracing.tracer  # None unless traces are exported
        try:
            if tracer is None:
                response = await handler(request)
            else:
                response = await traces.serve(tracer, request, lambda: handler(request))
            status = response.status
            response.headers["X-Request-Id"] = request_id
            return response
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = metrics.route_of(request)
            metrics.observe_request(request, route, status, elapsed)
            elapsed_ms = elapsed * 1000
            # the path only: query strings hold filter values (user names, e-mails)
            access_log.info(
                "%s %s %s %.1fms",
                request.method,
                request.path,
                status,
                elapsed_ms,
                extra={
                    "fields": {
                        "method": request.method,
                        "path": request.path,
                        "status": status,
                        "duration_ms": round(elapsed_ms, 1),
                    }
                },
            )
            if recording:
                _record_activity(app, request, request_id, route, status, elapsed, prefix)
            logs.request_id.reset(context)

    return request_context


def _record_activity(
    app: web.Application,
    request: web.Request,
    request_id: str,
    route: str,
    status: int,
    elapsed: float,
    prefix: str,
) -> None:
    """The activity entry of a request that presented a bearer token (and
    asked for more than discovery), errors included (gateway.activity)."""
    try:
        try:
            token = request[TOKEN]  # a bearer token that `authenticate` let through
        except KeyError:  # refused before (401, 413, 429) or no organisation's request
            scheme, token = _split_authorization(request.headers.get("Authorization"))
            if (
                scheme != "bearer"
                or not token
                or getattr(request.match_info.handler, _PUBLIC, False)
            ):
                return
        entry = activity.entry(request, token, request_id, route, status, elapsed, prefix)
        app[ACTIVITY].record(entry)
    except Exception:  # a request never fails because of its activity entry
        log.exception("activity entry not kept")


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SCIMException as exc:
        return _failed(request, exc)
    except grpc.aio.AioRpcError as exc:
        return _failed(request, _from_core(request, exc))
    except web.HTTPException as exc:
        return _failed(request, _from_http(request, exc))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error")
        return _failed(request, errors.internal_error(request[REQUEST_ID]))


def _failed(request: web.Request, exc: SCIMException) -> web.Response:
    request[FAILURE] = exc  # for the activity entry
    return errors.error_response(exc)


def _from_core(request: web.Request, exc: grpc.aio.AioRpcError) -> SCIMException:
    scim = errors.from_grpc(exc, request[REQUEST_ID])
    reason = errors.error_info(exc).reason
    if scim.status >= 500:
        log.warning("core call failed: %s %s", exc.code().name, exc.details())
    elif scim.status == 401:
        log.info("core refused the bearer token: %s", exc.details())
    elif scim.status == 429:
        metrics.REJECTIONS.labels(metrics.RATE_LIMIT).inc()
        log.info("429: the organisation's rate limit is reached")
    else:
        log.debug("core answered %s (reason %s)", exc.code().name, reason)
    return scim


def _from_http(request: web.Request, exc: web.HTTPException) -> SCIMException:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return errors.MethodNotAllowed(
            allowed=exc.allowed_methods,
            detail=f"{request.method} is not allowed on {request.path}",
        )
    if isinstance(exc, web.HTTPNotFound):
        return NotFoundException(detail=f"no SCIM endpoint at {request.path}")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return too_large(request.config_dict[SETTINGS].max_body_bytes)
    return SCIMException.from_error(
        Error(status=exc.status, detail=exc.reason or "request refused")
    )


@web.middleware
async def limit_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.config_dict[SETTINGS]
    if getattr(request.match_info.handler, _BULK, False):
        limit = settings.bulk_max_payload_bytes
        if request.content_length is not None and request.content_length > limit:
            raise errors.bulk_payload_too_large(limit)
    elif request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise too_large(settings.max_body_bytes)
    return await handler(request)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.http_exception is not None or getattr(
        request.match_info.handler, _PUBLIC, False
    ):
        return await handler(request)  # 404, 405, or a discovery endpoint
    header = request.headers.get("Authorization")
    scheme, token = _split_authorization(header)
    bearer = token if scheme == "bearer" and token else None
    # repeated failures from one address wait before the core is asked (gateway.authlimit)
    failures = request.config_dict[AUTH_FAILURES]
    address = request.remote or "-"
    wait = failures.wait(address, bearer)
    if wait:
        log.info("429: too many failed authentications from this address; retry after %ss", wait)
        metrics.REJECTIONS.labels(metrics.AUTH_FAILURES).inc()
        raise errors.TooManyRequests(retry_after=wait, detail=authlimit.DETAIL)
    try:
        if header is None:
            raise _unauthorized("no Authorization header")
        if scheme != "bearer":
            raise _unauthorized("the Authorization scheme is not Bearer")
        return await _check_bearer(request, handler, token)
    except UnauthorizedException:
        metrics.REJECTIONS.labels(metrics.UNAUTHENTICATED).inc()
        failures.failed(address, bearer)
        raise
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            metrics.REJECTIONS.labels(metrics.UNAUTHENTICATED).inc()
            failures.failed(address, bearer)
        raise


def _split_authorization(header: str | None) -> tuple[str, str]:
    """(scheme in lower case, credentials) of an Authorization header; the
    one reading of it, for the check below and for gateway.authlimit."""
    if header is None:
        return "", ""
    scheme, _, credentials = header.strip().partition(" ")
    return scheme.lower(), credentials.strip()


async def _check_bearer(request: web.Request, handler: Handler, token: str) -> web.StreamResponse:
    if not token:
        raise _unauthorized("the bearer token is empty")
    if not _BEARER_TOKEN.fullmatch(token):
        raise _unauthorized("the bearer token is malformed")
    request[TOKEN] = token
    return await handler(request)


def _unauthorized(reason: str) -> UnauthorizedException:
    log.info("401: %s", reason)
    return UnauthorizedException(
        detail=f"{reason}; send the SCIM token issued by Wando as 'Authorization: Bearer <token>'"
    )


def root(app: web.Application) -> list[Middleware]:
    """The root app's middlewares."""
    return [request_context(app), render_errors]


SCIM: list[Middleware] = [limit_body, authenticate]
