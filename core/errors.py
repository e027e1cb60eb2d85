"""Errors of the core, as types.

    CoreError
    ├── NotFound              NOT_FOUND            (also: another organisation's id)
    ├── AlreadyExists         ALREADY_EXISTS       uniqueness
    ├── InvalidArgument       INVALID_ARGUMENT     invalidValue
    │   ├── InvalidFilter                          invalidFilter
    │   ├── InvalidPath                            invalidPath
    │   ├── NoTarget                               noTarget
    │   ├── Mutability                             mutability
    │   ├── TooMany                                tooMany
    │   ├── InvalidSyntax                          invalidSyntax
    │   ├── InvalidCursor                          invalidCursor (RFC 9865)
    │   └── ExpiredCursor                          expiredCursor (RFC 9865)
    ├── VersionMismatch       FAILED_PRECONDITION  (If-Match → 412)
    ├── Unauthenticated       UNAUTHENTICATED
    ├── PermissionDenied      PERMISSION_DENIED
    ├── RateLimited           RESOURCE_EXHAUSTED   (retry_after_seconds → 429)
    ├── Unavailable           UNAVAILABLE
    ├── FellBehind            RESOURCE_EXHAUSTED   a watcher too far behind
    └── OutOfRange            OUT_OF_RANGE         a sequence beyond the stream

WIRE is the one table from type to gRPC status code and ErrorInfo reason; the
interceptor renders any CoreError through it. Code raises these and never picks
a status code itself.
"""

from __future__ import annotations

import grpc

from common.wire import ERROR_INFO_METADATA_KEY
from wando.provisioning.v1 import error_pb2

R = error_pb2.ErrorReason


class CoreError(Exception):
    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(CoreError):
    pass


class AlreadyExists(CoreError):
    pass


class InvalidArgument(CoreError):
    pass


class InvalidFilter(InvalidArgument):
    pass


class InvalidPath(InvalidArgument):
    pass


class NoTarget(InvalidArgument):
    pass


class Mutability(InvalidArgument):
    pass


class TooMany(InvalidArgument):
    pass


class InvalidSyntax(InvalidArgument):
    pass


class InvalidCursor(InvalidArgument):
    pass


class ExpiredCursor(InvalidArgument):
    pass


class VersionMismatch(CoreError):
    pass


class Unauthenticated(CoreError):
    pass


class PermissionDenied(CoreError):
    pass


class Unavailable(CoreError):
    pass


class RateLimited(CoreError):
    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FellBehind(CoreError):
    pass


class OutOfRange(CoreError):
    pass


WIRE: dict[type[CoreError], tuple[grpc.StatusCode, int]] = {
    NotFound: (grpc.StatusCode.NOT_FOUND, R.ERROR_REASON_NOT_FOUND),
    AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, R.ERROR_REASON_UNIQUENESS),
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_VALUE),
    InvalidFilter: (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_FILTER),
    InvalidPath: (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_PATH),
    NoTarget: (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_NO_TARGET),
    Mutability: (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_MUTABILITY),
    TooMany: (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_TOO_MANY),
    InvalidSyntax: (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_SYNTAX),
    InvalidCursor: (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_CURSOR),
    ExpiredCursor: (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_EXPIRED_CURSOR),
    VersionMismatch: (grpc.StatusCode.FAILED_PRECONDITION, R.ERROR_REASON_VERSION_MISMATCH),
    Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, R.ERROR_REASON_UNAUTHENTICATED),
    PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, R.ERROR_REASON_PERMISSION_DENIED),
    Unavailable: (grpc.StatusCode.UNAVAILABLE, R.ERROR_REASON_UNAVAILABLE),
    RateLimited: (grpc.StatusCode.RESOURCE_EXHAUSTED, R.ERROR_REASON_RATE_LIMITED),
    FellBehind: (grpc.StatusCode.RESOURCE_EXHAUSTED, R.ERROR_REASON_FELL_BEHIND),
    OutOfRange: (grpc.StatusCode.OUT_OF_RANGE, R.ERROR_REASON_OUT_OF_RANGE),
}


# Messages often quote what the client sent (a sortBy, a member id, a key); the
# status travels in gRPC trailers, which refuse more than 16 KiB altogether
# (and percent-encode non-ASCII text to up to 12 bytes a character).
MAX_MESSAGE_LENGTH = 1000
MAX_FIELD_LENGTH = 200


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_status(error: CoreError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """The gRPC status code, message and trailing metadata for an error."""
    code, reason = WIRE[type(error)]
    field = _shortened(error.field, MAX_FIELD_LENGTH)
    info = error_pb2.ErrorInfo(
        reason=reason,  # type: ignore[arg-type]
        field=field,
        retry_after_seconds=getattr(error, "retry_after", 0),
    )
    message = _shortened(error.message, MAX_MESSAGE_LENGTH)
    return code, message, ((ERROR_INFO_METADATA_KEY, info.SerializeToString()),)
