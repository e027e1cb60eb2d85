"""What traces cost on the hot paths, off and on: `python -m bench.tracing`.

The three places a request meets common.tracing, each driven in process
without I/O (a trivial handler, RPC and core answer): the gateway's
request_context middleware, its Call.invoke to the core, and the core's RPC
wrapper. For each, with no provider (what a process without
OTEL_EXPORTER_OTLP_ENDPOINT runs) and with an SDK provider sampling every
span into a batch processor whose exporter drops them: nanoseconds per call
(the minimum of interleaved repeats) and Python bytecodes per call (exact,
whatever else the machine does). Database statements are not here: without
traces the pool's connections are plain asyncpg.Connection, unchanged.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_urldispatcher import UrlMappingMatchInfo
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from common import config, tracing
from core import instrumentation
from gateway import middlewares, resources
from gateway.keys import SETTINGS

Call = Callable[[], Coroutine[Any, Any, Any]]


class _Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-request-id", "0123456789abcdef"),)


class _Method:
    """A stub's multicallable, answering at once."""

    _method = b"/wando.provisioning.v1.UserService/GetUser"

    async def __call__(self, request: Any, metadata: Any, timeout: float) -> int:
        return 1


async def _rpc(request: Any, context: Any) -> int:
    return 1


async def _handler(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


def _drive(call: Call) -> Any:
    """Run a coroutine that never waits, without an event loop."""
    try:
        call().send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine waited")


def _nanoseconds(call: Call, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        _drive(call)
    return (time.perf_counter() - started) / calls * 1e9


def _bytecodes(call: Call) -> int:
    count = 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        frame.f_trace_opcodes = True
        if event == "opcode":
            count += 1
        return trace

    _drive(call)  # labels bound, RPC names read
    sys.settrace(trace)
    try:
        _drive(call)
    finally:
        sys.settrace(None)
    return count


def cases() -> dict[str, Call]:
    context, method = _Context(), _Method()
    unary = instrumentation._unary("/wando.provisioning.v1.UserService/GetUser", _rpc)
    call = resources.Call(metadata=(("authorization", "Bearer x"),), timeout=5)
    request = make_mocked_request("GET", "/api/auth/scim/v2/Users/0f8e")
    app = web.Application()
    app[SETTINGS] = config.load({"WANDO_ACTIVITY": "off"})  # what tracing costs, alone
    route = app.router.add_get("/api/auth/scim/v2/Users/{id}", _handler)
    request_context = middlewares.request_context(app)
    request._match_info = UrlMappingMatchInfo({"id": "0f8e"}, route)  # as routing leaves it
    return {
        "gateway request (request_context)": lambda: request_context(request, _handler),
        "gateway call to the core (Call.invoke)": lambda: call.invoke(method, None),
        "core RPC (instrumentation._unary)": lambda: unary(None, context),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # the access log is not what is measured
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Dropped()))
    print("| path | off ns | on ns | off bytecodes | on bytecodes |")
    print("|---|---|---|---|---|")
    try:
        for name, call in cases().items():
            off: list[float] = []
            on: list[float] = []
            for _ in range(args.repeats):
                tracing.use(None)
                off.append(_nanoseconds(call, args.calls))
                tracing.use(provider)
                on.append(_nanoseconds(call, args.calls))
            tracing.use(None)
            off_codes = _bytecodes(call)
            tracing.use(provider)
            on_codes = _bytecodes(call)
            print(f"| {name} | {min(off):.0f} | {min(on):.0f} | {off_codes} | {on_codes} |")
    finally:
        tracing.use(None)
        provider.shutdown()
        logging.disable(logging.NOTSET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
