"""The one table from the core's gRPC status to SCIM errors: every row, unit-tested
on constructed gRPC errors (the real core's errors are covered through HTTP)."""

from __future__ import annotations

import json

import grpc
import pytest
from scim2_models import SCIMException

from gateway import errors
from wando.provisioning.v1 import error_pb2

C = grpc.StatusCode
R = error_pb2.ErrorReason


def rpc_error(
    code: grpc.StatusCode, details: str = "what went wrong", reason: int | None = None
) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if reason is not None:
        info = error_pb2.ErrorInfo(reason=reason, field="userName")  # type: ignore[arg-type]
        trailing.add(errors.ERROR_INFO_METADATA_KEY, info.SerializeToString())
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


ROWS = [
    # code, reason, HTTP status, scimType
    (C.NOT_FOUND, R.ERROR_REASON_NOT_FOUND, 404, None),
    (C.ALREADY_EXISTS, R.ERROR_REASON_UNIQUENESS, 409, "uniqueness"),
    (C.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_FILTER, 400, "invalidFilter"),
    (C.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_PATH, 400, "invalidPath"),
    (C.INVALID_ARGUMENT, R.ERROR_REASON_NO_TARGET, 400, "noTarget"),
    (C.INVALID_ARGUMENT, R.ERROR_REASON_MUTABILITY, 400, "mutability"),
    (C.INVALID_ARGUMENT, R.ERROR_REASON_TOO_MANY, 400, "tooMany"),
    (C.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_SYNTAX, 400, "invalidSyntax"),
    (C.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_VALUE, 400, "invalidValue"),
    (C.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_CURSOR, 400, "invalidCursor"),
    (C.INVALID_ARGUMENT, R.ERROR_REASON_EXPIRED_CURSOR, 400, "expiredCursor"),
    (C.INVALID_ARGUMENT, R.ERROR_REASON_UNSPECIFIED, 400, "invalidValue"),
    (C.INVALID_ARGUMENT, None, 400, "invalidValue"),
    (C.FAILED_PRECONDITION, R.ERROR_REASON_VERSION_MISMATCH, 412, None),
    (C.UNAUTHENTICATED, R.ERROR_REASON_UNAUTHENTICATED, 401, None),
    (C.PERMISSION_DENIED, R.ERROR_REASON_PERMISSION_DENIED, 403, None),
]


@pytest.mark.parametrize(("code", "reason", "status", "scim_type"), ROWS)
def test_core_errors_keep_their_message(
    code: grpc.StatusCode, reason: int | None, status: int, scim_type: str | None
) -> None:
    scim = errors.from_grpc(rpc_error(code, "userName is taken", reason), "req-1")
    assert (scim.status, scim.scim_type or None) == (status, scim_type)
    assert scim.detail == "userName is taken"
    body = json.loads(errors.error_response(scim).text or "")
    expected = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": str(status),
        "detail": "userName is taken",
    }
    if scim_type:
        expected["scimType"] = scim_type
    assert body == expected


def test_every_row_of_the_table_is_tested() -> None:
    tested = {(code, reason) for code, reason, _, _ in ROWS}
    tested |= {(code, None) for code, _, _, _ in ROWS}
    tested |= {(C.UNAVAILABLE, None), (C.DEADLINE_EXCEEDED, None), (C.CANCELLED, None)}
    tested |= {(C.RESOURCE_EXHAUSTED, R.ERROR_REASON_RATE_LIMITED)}
    assert set(errors.TABLE) <= tested


@pytest.mark.parametrize(("seconds", "retry_after"), [(7, "7"), (0, "1")])
def test_the_organisations_rate_limit_is_429_with_the_cores_delay(
    seconds: int, retry_after: str
) -> None:
    """The core's RateLimited (core.ratelimit) says how long to wait; a
    RESOURCE_EXHAUSTED without that reason is the transport's, a 500 (below)."""
    info = error_pb2.ErrorInfo(reason=R.ERROR_REASON_RATE_LIMITED, retry_after_seconds=seconds)
    trailing = grpc.aio.Metadata((errors.ERROR_INFO_METADATA_KEY, info.SerializeToString()))
    error = grpc.aio.AioRpcError(C.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), trailing, "slow down")
    response = errors.error_response(errors.from_grpc(error, "r"))
    assert (response.status, response.headers["Retry-After"]) == (429, retry_after)
    assert json.loads(response.text or "")["status"] == "429"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (C.UNAVAILABLE, R.ERROR_REASON_UNAVAILABLE),  # the core's database is away
        (C.UNAVAILABLE, None),  # the core is unreachable
        (C.DEADLINE_EXCEEDED, None),  # the core is too slow
        (C.CANCELLED, None),  # the core shut down with the call queued (tests/drills/test_fleet.py)
    ],
)
def test_unavailable_is_503_with_retry_after_and_no_internals(
    code: grpc.StatusCode, reason: int | None
) -> None:
    error = rpc_error(code, "failed to connect to all addresses; ipv4:10.0.0.7:50051", reason)
    response = errors.error_response(errors.from_grpc(error, "req-1"))
    assert response.status == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "10.0.0.7" not in (response.text or "")


@pytest.mark.parametrize(
    "code", [C.INTERNAL, C.UNKNOWN, C.UNIMPLEMENTED, C.RESOURCE_EXHAUSTED, C.DATA_LOSS, C.ABORTED]
)
def test_anything_else_is_a_generic_500_with_the_request_id(code: grpc.StatusCode) -> None:
    error = rpc_error(code, 'Traceback (most recent call last): File "core/users.py"')
    response = errors.error_response(errors.from_grpc(error, "req-42"))
    body = json.loads(response.text or "")
    assert response.status == 500 and body["status"] == "500"
    assert "req-42" in body["detail"] and "Traceback" not in body["detail"]
    assert "scimType" not in body


def test_401_carries_www_authenticate() -> None:
    response = errors.error_response(errors.from_grpc(rpc_error(C.UNAUTHENTICATED), "r"))
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="wando-scim"'
    assert response.headers["Content-Type"] == "application/scim+json; charset=utf-8"


def test_a_garbled_trailer_is_no_reason() -> None:
    trailing = grpc.aio.Metadata((errors.ERROR_INFO_METADATA_KEY, b"\xff\xff\xff"))
    error = grpc.aio.AioRpcError(C.INVALID_ARGUMENT, grpc.aio.Metadata(), trailing, "bad")
    assert errors.from_grpc(error, "r").scim_type == "invalidValue"


def test_405_and_429_headers() -> None:
    response = errors.error_response(errors.MethodNotAllowed(allowed={"POST", "GET"}))
    assert (response.status, response.headers["Allow"]) == (405, "GET, POST")
    response = errors.error_response(errors.TooManyRequests(retry_after=3))
    assert (response.status, response.headers["Retry-After"]) == (429, "3")
    assert json.loads(response.text or "")["status"] == "429"


def test_error_classes_are_scim_exceptions() -> None:
    for cls in errors.TABLE.values():
        assert issubclass(cls, SCIMException)
