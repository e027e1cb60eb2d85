"""The local core: the core's SCIM-facing services in the gateway's own process,
behind an object shaped like a grpc.aio channel (WANDO_CORE=local; the default
for the gateway workers of `wando serve`).

Inside one machine's `wando serve` the gRPC hop between gateway and core cost
about half the CPU of a SCIM GET (HTTP/2 framing, grpc.aio's thread hand-offs:
issue #16). Here the gateway's stubs call the very servicer methods the gRPC
server registers (core.server.add_scim_services, instrumented: metrics,
request id, traces, error rendering), with a gRPC call's semantics:

- the request and the response are copied through their wire form
  (SerializeToString / FromString): no message object is shared, and what
  cannot be encoded fails as it would on the wire;
- the metadata the caller gave is the handler's invocation_metadata();
- `context.abort(code, details, trailing_metadata)` reaches the caller as a
  grpc.aio.AioRpcError with that code, details and trailing metadata; any
  other exception from a handler as UNKNOWN (what a grpc.aio server sends;
  the instrumented services render their own errors first);
- each call runs in its own task (its own copy of the context variables, as
  on a server); `timeout` cancels it at the deadline and the caller gets
  DEADLINE_EXCEEDED; a caller that is cancelled cancels it;
- an unknown method is UNIMPLEMENTED; a call after close() is a
  grpc.aio.UsageError, as on a closed channel.

A handler asking its context for anything else fails loudly
(NotImplementedError): the core uses invocation_metadata and abort alone.
Streaming methods are not offered; the gateway calls none.

One method is not a call: `record_activity`, RecordActivity's work without
its message. The gateway's activity batches (thousands of entries a second
under load, issue #18) are handed over as plain lists
(common.activity_columns) and stored by the same code (core.activity.store),
with the same checks; there is no credential to check in-process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias, cast

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common.activity_columns import Columns
from core import activity
from core.cursors import Cursors
from core.doorbell import Doorbell
from core.server import SCIM_SERVICE_NAMES, add_scim_services, build_guard

log = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str | bytes], ...]
if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]  # not subscriptable at run time


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class LocalContext:
    """What a servicer method sees of its call (grpc.aio.ServicerContext, the
    part the core uses)."""

    def __init__(self, metadata: Metadata, deadline: float | None) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.trailing_metadata: Metadata = ()

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()
    ) -> NoReturn:
        if self.code is not None:
            raise grpc.aio.UsageError("Abort already called!")
        self.code, self.details = code, details
        if trailing_metadata:
            self.trailing_metadata = tuple(trailing_metadata)
        raise grpc.aio.AbortError()

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        self.trailing_metadata = tuple(trailing_metadata)

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def peer(self) -> str:
        return "local"

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"the local core's context has no {name}")


def _expire(task: asyncio.Task[Any], deadline_passed: list[bool]) -> None:
    if task.cancel():
        deadline_passed.append(True)


def _being_cancelled() -> bool:
    """Whether the calling task itself is being cancelled (not only its handler)."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


def _no_streams(*args: Any, **kwargs: Any) -> NoReturn:
    raise NotImplementedError("the local core offers no streaming method")


def _same(value: Any) -> Any:
    return value


def _error(
    code: grpc.StatusCode, details: str, trailing_metadata: Metadata = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing_metadata), details
    )


class LocalUnaryUnary(grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    """One method of the local core, as a stub holds it."""

    def __init__(
        self,
        core: LocalCore,
        method: str,
        request_serializer: Any,
        response_deserializer: Any,
    ) -> None:
        self._core = core
        self._method = method.encode()  # as grpc.aio's (gateway.metrics reads it)
        self._name = method
        self._serialize = request_serializer or _same
        self._deserialize = response_deserializer or _same

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._call(request, timeout, tuple(metadata or ()))

    async def _call(self, request: Any, timeout: float | None, metadata: Metadata) -> Any:
        core = self._core
        if core.closed:
            raise grpc.aio.UsageError("Channel is closed.")
        handler = core.handler(self._name)
        if handler is None or handler.unary_unary is None:
            raise _error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        method = cast(Any, handler.unary_unary)  # takes our LocalContext
        payload = self._serialize(request)
        try:
            received = (handler.request_deserializer or _same)(payload)
        except Exception:
            raise _error(grpc.StatusCode.INTERNAL, "Exception deserializing request!") from None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        context = LocalContext(metadata, deadline)
        task = loop.create_task(method(received, context))
        # the deadline: a timer that cancels the handler (cheaper than wait_for)
        deadline_passed: list[bool] = []
        timer = (
            None if timeout is None else loop.call_later(timeout, _expire, task, deadline_passed)
        )
        try:
            response = await task
        except grpc.aio.AbortError:
            code = context.code or grpc.StatusCode.UNKNOWN
            raise _error(code, context.details, context.trailing_metadata) from None
        except asyncio.CancelledError:
            if deadline_passed and not _being_cancelled():
                raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
            raise  # the caller was cancelled (and with it the handler)
        except Exception as exc:
            raise self._unexpected(type(exc)) from None
        finally:
            if timer is not None:
                timer.cancel()
        if deadline_passed:  # a handler that swallowed its cancellation
            raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        try:
            data = (handler.response_serializer or _same)(response)
        except Exception:
            raise _error(grpc.StatusCode.INTERNAL, "Failed to serialize response!") from None
        return self._deserialize(data)

    def _unexpected(self, kind: type[BaseException]) -> grpc.aio.AioRpcError:
        """A handler's exception that no one rendered: UNKNOWN, as a grpc.aio
        server answers; the type alone (its message may quote anything)."""
        log.error("unexpected %s raised by servicer method %s", kind.__name__, self._name)
        return _error(grpc.StatusCode.UNKNOWN, f"Unexpected {kind.__name__}")


class LocalCore(grpc.aio.Channel):
    """The core's services in this process, as a channel to them; registered
    like a server (the generated add_*Servicer_to_server functions)."""

    def __init__(
        self, doorbell: Doorbell | None = None, recorder: activity.Recorder | None = None
    ) -> None:
        self._handlers: dict[str, Handler] = {}
        self._generic: list[grpc.GenericRpcHandler] = []
        self._doorbell = doorbell  # the services' (rung after their role changes)
        self._recorder = recorder  # the activity service's
        self.closed = False

    async def record_activity(self, columns: Columns) -> int:
        """RecordActivity without the message: the gateway's batch of activity
        entries as plain columns (common.activity_columns), stored as the RPC
        stores them (core.activity.store). Measured alone, building the
        message, encoding and decoding it cost 0.75 µs an entry, more than
        a third of the batch's cost in this process (issue #18). Fails as a
        call after close() does."""
        if self.closed:
            raise grpc.aio.UsageError("Channel is closed.")
        if self._recorder is None:
            raise NotImplementedError("this local core stores no activity")
        return await self._recorder.store(columns)

    # -- registration, as on a grpc.aio.Server --

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, Handler]
    ) -> None:
        for name, handler in method_handlers.items():
            self._handlers[f"/{service_name}/{name}"] = handler

    def handler(self, method: str) -> Handler | None:
        found = self._handlers.get(method)
        if found is None:
            for generic in self._generic:
                found = generic.service(_CallDetails(method))
                if found is not None:
                    break
        return found

    # -- the channel --

    def unary_unary(  # type: ignore[override]
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> LocalUnaryUnary:
        return LocalUnaryUnary(self, method, request_serializer, response_deserializer)

    # a stub makes every method of its service; a streaming one fails when called
    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _no_streams

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _no_streams

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _no_streams

    async def close(self, grace: float | None = None) -> None:
        """New calls fail from here on; calls in flight finish (the gateway
        closes its channel after draining its requests); the replicas are
        woken for the changes they wrote."""
        self.closed = True
        if self._doorbell is not None:
            await self._doorbell.close()

    async def __aenter__(self) -> LocalCore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.SHUTDOWN if self.closed else grpc.ChannelConnectivity.READY

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        raise NotImplementedError("the local core's state does not change")

    async def channel_ready(self) -> None:
        return None


async def start_local_core(
    pool: asyncpg.Pool, cursors: Cursors, gateway_token: str | None
) -> LocalCore:
    """The SCIM-facing services (core.server.add_scim_services: the same
    servicers, credential checks, token cache, rate limits and activity
    recorder as a core's) on `pool`, with the standard health service
    answering SERVING (the gateway's /readyz asks it), as a channel.
    AdminService and RoleService are not here: they stay on the cores."""
    doorbell = Doorbell(pool)
    recorder = activity.Recorder(pool)
    core = LocalCore(doorbell, recorder)
    # no admin method is hosted here; the guard needs an admin credential that no caller holds
    guard, _ = build_guard(pool, secrets.token_urlsafe(32), None, gateway_token)
    add_scim_services(cast(grpc.aio.Server, core), pool, guard, cursors, doorbell, recorder)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, cast(grpc.aio.Server, core))
    for name in (*SCIM_SERVICE_NAMES, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return core
