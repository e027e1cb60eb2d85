"""SCIM errors (RFC 7644 §3.12), and the one table from the core's gRPC status
to them.

The gateway raises scim2-models' exceptions, plus the few HTTP statuses that
library has no class for:

    SCIMException (scim2_models)            status  scimType
    ├── InvalidFilterException …            400     invalidFilter, invalidPath, …
    │                                               invalidCursor, expiredCursor (RFC 9865)
    ├── UnauthorizedException               401     (WWW-Authenticate: Bearer)
    ├── ForbiddenException                  403
    ├── NotFoundException                   404
    ├── UniquenessException                 409     uniqueness
    ├── PreconditionFailedException         412
    ├── PayloadTooLargeException            413
    │   └── TooLarge                        413     tooLarge (/Bulk limits)
    ├── MethodNotAllowed                    405     (Allow)
    ├── TooManyRequests                     429     (Retry-After)
    ├── InternalError                       500     (generic detail + request id)
    └── ServiceUnavailable                  503     (Retry-After)

`from_grpc` turns a failed core call into one of them through TABLE;
`error_response` renders any of them. Nothing else picks an HTTP status for a
core failure, and nothing matches message text.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError
from scim2_models import (
    ExpiredCursorException,
    ForbiddenException,
    InvalidCursorException,
    InvalidFilterException,
    InvalidPathException,
    InvalidSyntaxException,
    InvalidValueException,
    MutabilityException,
    NoTargetException,
    NotFoundException,
    PayloadTooLargeException,
    PreconditionFailedException,
    SCIMException,
    TooManyException,
    UnauthorizedException,
    UniquenessException,
)

from common.wire import ERROR_INFO_METADATA_KEY
from gateway.responses import scim_response
from wando.provisioning.v1 import error_pb2

WWW_AUTHENTICATE = 'Bearer realm="wando-scim"'
RETRY_AFTER_UNAVAILABLE_SECONDS = 5


class MethodNotAllowed(SCIMException):
    status = 405
    _default_detail = "This method is not allowed on this endpoint"

    def __init__(self, *, allowed: Iterable[str] = (), detail: str | None = None) -> None:
        self.allowed = frozenset(allowed)
        super().__init__(detail=detail)


class TooManyRequests(SCIMException):
    status = 429
    _default_detail = "Too many requests for this organisation; retry after the given delay"

    def __init__(self, *, retry_after: int, detail: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(detail=detail)


class TooLarge(PayloadTooLargeException):
    """A /Bulk request beyond maxOperations or maxPayloadSize (RFC 7644
    §3.7.4), with the scimType issue #17 asks for."""

    scim_type = "tooLarge"


def bulk_payload_too_large(limit: int) -> TooLarge:
    return TooLarge(detail=f"the bulk request body exceeds maxPayloadSize ({limit} bytes)")


class InternalError(SCIMException):
    status = 500
    _default_detail = "Internal error"


class ServiceUnavailable(SCIMException):
    status = 503
    _default_detail = "The provisioning service is temporarily unavailable; retry shortly"

    def __init__(
        self, *, retry_after: int = RETRY_AFTER_UNAVAILABLE_SECONDS, detail: str | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(detail=detail)


C = grpc.StatusCode
R = error_pb2.ErrorReason

# (gRPC status code, ErrorInfo reason or None for "any reason") → SCIM error.
# The exception class carries the HTTP status and the scimType.
TABLE: dict[tuple[grpc.StatusCode, int | None], type[SCIMException]] = {
    (C.NOT_FOUND, None): NotFoundException,  # 404
    (C.ALREADY_EXISTS, None): UniquenessException,  # 409 uniqueness
    (C.INVALID_ARGUMENT, None): InvalidValueException,  # 400 invalidValue
    (C.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_FILTER): InvalidFilterException,
    (C.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_PATH): InvalidPathException,
    (C.INVALID_ARGUMENT, R.ERROR_REASON_NO_TARGET): NoTargetException,
    (C.INVALID_ARGUMENT, R.ERROR_REASON_MUTABILITY): MutabilityException,
    (C.INVALID_ARGUMENT, R.ERROR_REASON_TOO_MANY): TooManyException,
    (C.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_SYNTAX): InvalidSyntaxException,
    (C.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_VALUE): InvalidValueException,
    (C.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_CURSOR): InvalidCursorException,
    (C.INVALID_ARGUMENT, R.ERROR_REASON_EXPIRED_CURSOR): ExpiredCursorException,
    (C.FAILED_PRECONDITION, None): PreconditionFailedException,  # 412 (If-Match)
    (C.UNAUTHENTICATED, None): UnauthorizedException,  # 401
    (C.PERMISSION_DENIED, None): ForbiddenException,  # 403
    (C.UNAVAILABLE, None): ServiceUnavailable,  # 503, also: core unreachable
    (C.DEADLINE_EXCEEDED, None): ServiceUnavailable,  # 503, core too slow
    # 503: the core gave the call up, e.g. one that reached it as it began to
    # shut down (gRPC cancels calls still queued at shutdown); another core answers
    (C.CANCELLED, None): ServiceUnavailable,
    (C.RESOURCE_EXHAUSTED, R.ERROR_REASON_RATE_LIMITED): TooManyRequests,  # 429
}

# statuses whose message the core wrote for people; any other status may come
# from the transport (addresses, internals) and gets the class's own detail
_CORE_WORDED = frozenset(
    {
        C.NOT_FOUND,
        C.ALREADY_EXISTS,
        C.INVALID_ARGUMENT,
        C.FAILED_PRECONDITION,
        C.UNAUTHENTICATED,
        C.PERMISSION_DENIED,
    }
)


def error_info(error: grpc.aio.AioRpcError) -> error_pb2.ErrorInfo:
    """The ErrorInfo the core attached to a failed call (empty if none)."""
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_INFO_METADATA_KEY and isinstance(value, bytes):
            try:
                return error_pb2.ErrorInfo.FromString(value)
            except DecodeError:  # a garbled trailer is just no reason
                break
    return error_pb2.ErrorInfo()


def from_grpc(error: grpc.aio.AioRpcError, request_id: str) -> SCIMException:
    """The SCIM error for a failed core call."""
    code = error.code()
    info = error_info(error)
    cls = TABLE.get((code, info.reason)) or TABLE.get((code, None))
    if cls is None:
        return internal_error(request_id)
    if cls is TooManyRequests:
        return TooManyRequests(retry_after=max(1, info.retry_after_seconds))
    detail = (error.details() or None) if code in _CORE_WORDED else None
    return cls(detail=detail)


def internal_error(request_id: str) -> InternalError:
    return InternalError(detail=f"Internal error; quote request id {request_id} to support")


def error_response(exc: SCIMException) -> web.Response:
    """An RFC 7644 §3.12 error body, with the headers its status calls for."""
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    if isinstance(exc, TooManyRequests | ServiceUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(sorted(exc.allowed))
    body = exc.to_error().model_dump()
    return scim_response(body, status=exc.status, headers=headers)
