"""The event loop every wando process runs on: uvloop.

Measured on this stack (issue #7): uvloop makes each layer — grpc.aio,
aiohttp, asyncpg — 14-39 % faster than asyncio's default loop, mostly in
socket reads and writes. One switch, so the benchmark's baselines run on the
very loop the service does (bench/loop.py imports it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

NAME = "uvloop"

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
