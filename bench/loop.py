"""The event loop every benchmark process runs on: the service's own.

Why one switch: the issue's measurements show uvloop changes every layer by
14-39 %, so a baseline on one loop and the service on another would make the
ratios meaningless. The service runs `asyncio.run` (core/cli/run.py); if it
ever adopts uvloop, set SERVICE_LOOP = "uvloop" here and the baselines and
the load generator follow (tests/test_bench.py fails until they agree).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Coroutine
from typing import Any, TypeVar

SERVICE_LOOP = "asyncio"  # or "uvloop": what core/cli/run.py runs on

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the service's event loop."""
    if SERVICE_LOOP == "uvloop":
        uvloop = importlib.import_module("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
