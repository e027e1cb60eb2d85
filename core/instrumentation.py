"""Cross-cutting work on every RPC of our services: a request id for the logs,
Prometheus metrics by method and status, a trace span when traces are
exported (common.tracing), and the rendering of errors
(CoreError through errors.WIRE; lost database connections as UNAVAILABLE;
anything else as INTERNAL with the request id, the traceback only in the log).

It wraps each servicer method once, when the server is built (instrument()),
rather than as a grpc.aio ServerInterceptor: an interceptor runs a chain of
coroutines and builds a handler on every call, which cost a quarter of the
throughput of the role lookups every Wando request makes (issue #7)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from google.protobuf.descriptor import ServiceDescriptor
from prometheus_client import Counter, Histogram

from common import logs, tracing
from core import errors, roles
from core.doorbell import Doorbell
from core.metrics import Inc, batched_counter, batched_histogram
from core.rpc import Ctx

log = logging.getLogger(__name__)

RPC_COUNT = Counter("wando_grpc_requests_total", "RPCs handled by the core", ["method", "code"])
RPC_LATENCY = Histogram(
    "wando_grpc_request_duration_seconds",
    "Time to handle an RPC",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# failures that mean "the database is not there right now"
DB_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    # asyncpg's protocol state after the server ended an idle pooled session
    # (MagicStack/asyncpg#784, #1069); the pool drops that connection
    asyncpg.InternalClientError,
)


# request ids for calls that bring none: a random prefix per process and a
# counter, 32 hex digits as uuid4().hex was, without a random read (a system
# call) and a UUID per RPC (the role lookups' hot path, issue #16)
_ID_PREFIX = secrets.token_hex(8)
_ids = itertools.count(1)


def _request_id(context: Ctx) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return f"{_ID_PREFIX}{next(_ids):016x}"


# a transaction PostgreSQL rolled back whole to let a concurrent one go on:
# nothing was applied, so the caller may simply retry (a deadlock also means
# two statements took locks against core.roles' order: it is logged)
DB_CONFLICT = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


async def _render(exc: BaseException, context: Ctx) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc  # the handler chose its status itself
    if isinstance(exc, errors.CoreError):
        code, message, trailers = errors.to_status(exc)
        await context.abort(code, message, trailing_metadata=trailers)
    if isinstance(exc, DB_CONFLICT):
        log.warning("transaction rolled back by PostgreSQL: %s", type(exc).__name__)
        code, message, trailers = errors.to_status(
            errors.Unavailable("a concurrent write got in the way and nothing was applied; retry")
        )
        await context.abort(code, message, trailing_metadata=trailers)
    if isinstance(exc, DB_UNAVAILABLE):
        log.warning("database unavailable: %s", type(exc).__name__)
        code, message, trailers = errors.to_status(
            errors.Unavailable("the database is unavailable; retry shortly")
        )
        await context.abort(code, message, trailing_metadata=trailers)
    log.exception("unexpected error")
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error (request id {logs.request_id.get()})"
    )


def instrument(servicer: Any, service: ServiceDescriptor, doorbell: Doorbell | None = None) -> Any:
    """Wrap every RPC method of `servicer` (implementing `service`) in place;
    register it afterwards. Returns the servicer. With `doorbell`, a unary
    call that wrote role changes rings it when it ends."""
    for rpc in service.methods:
        method = f"/{service.full_name}/{rpc.name}"
        inner = getattr(servicer, rpc.name)
        if rpc.server_streaming:
            setattr(servicer, rpc.name, _stream(method, inner))
        else:
            setattr(servicer, rpc.name, _unary(method, inner, doorbell))
    return servicer


def _unary(
    method: str, inner: Any, doorbell: Doorbell | None = None
) -> Callable[[Any, Ctx], Awaitable[Any]]:
    # bound once, not looked up per call; written in batches (core.metrics)
    latency = batched_histogram(RPC_LATENCY.labels(method))
    counts: dict[str, Inc] = {}  # by code, each looked up once

    async def unary(request: Any, context: Ctx) -> Any:
        request_id = _request_id(context)
        token = logs.request_id.set(request_id)
        tracer = tracing.tracer  # None unless traces are exported
        traced = (
            None
            if tracer is None
            else tracing.start_rpc(tracer, method, context.invocation_metadata(), request_id)
        )
        started = time.perf_counter()
        code = "OK"
        try:
            return await inner(request, context)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except BaseException as exc:
            code = _code_name(exc)
            await _render(exc, context)
            raise  # unreachable: abort raises
        finally:
            latency.observe(time.perf_counter() - started)
            count = counts.get(code)
            if count is None:
                count = counts[code] = batched_counter(RPC_COUNT.labels(method, code))
            count.inc()
            if traced is not None:
                tracing.end_rpc(*traced, code)
            logs.request_id.reset(token)
            # the call's transaction has ended: wake the replicas if it wrote
            # role changes (a rolled-back one rings for nothing, harmlessly)
            if doorbell is not None:
                advanced = roles.OUTBOX_ADVANCED.get()
                if advanced is not None:
                    doorbell.ring(advanced)

    return unary


def _stream(method: str, inner: Any) -> Callable[[Any, Ctx], AsyncIterator[Any]]:
    # not traced: a stream (WatchRoleChanges) lives for hours, not one request
    async def stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
        token = logs.request_id.set(_request_id(context))
        code = "OK"
        try:
            async for item in inner(request, context):
                yield item
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except BaseException as exc:
            code = _code_name(exc)
            await _render(exc, context)
            raise
        finally:
            RPC_COUNT.labels(method, code).inc()
            logs.request_id.reset(token)

    return stream


def _code_name(exc: BaseException) -> str:
    if isinstance(exc, errors.CoreError):
        return errors.WIRE[type(exc)][0].name
    if isinstance(exc, DB_UNAVAILABLE + DB_CONFLICT):
        return "UNAVAILABLE"
    if isinstance(exc, grpc.aio.AbortError):
        return "ABORTED_BY_HANDLER"
    return "INTERNAL"
