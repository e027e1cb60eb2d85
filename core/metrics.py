"""Prometheus metrics: the endpoint (/metrics) on WANDO_METRICS_LISTEN, and
the database pool's gauges.

A standalone `wando core` or `wando gateway` serves its own metrics. Under
`wando serve`, every worker writes its metrics to files in a directory the
supervisor made (prometheus-client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR),
and the supervisor serves them added up across workers on one endpoint.

In that mode every write to a metric is a locked write to a memory-mapped
file with a getpid() call (0.8 µs a counter, 1.6 µs a histogram observation:
a fifth of a cached role lookup's Python, issue #16). The hot paths' metrics
(batched_counter, batched_histogram) therefore add up in plain attributes
and are written to their files in one go, FLUSH_SECONDS after the first
observation since the last write, and when the process exits: a scrape sees
them at most FLUSH_SECONDS late. In a process of its own (no multiprocess
mode) a write is cheap and a scrape reads the metrics live: they are
written through.
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import logging
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from prometheus_client import CollectorRegistry, Gauge, multiprocess, start_http_server

from common.config import HostPort

log = logging.getLogger(__name__)

POOL_IN_USE = Gauge(
    "wando_db_pool_connections_in_use",
    "Database connections taken from the pool (all core processes)",
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "wando_db_pool_waiting",
    "Calls waiting for a database connection from a full pool (all core processes)",
    multiprocess_mode="livesum",
)
POOL_WATCH_SECONDS = 1.0
FLUSH_SECONDS = 1.0


class Inc(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Observe(Protocol):
    def observe(self, amount: float) -> None: ...


class _Batches:
    """The batched metrics of this process and the timer that writes them."""

    def __init__(self) -> None:
        self.members: list[_BatchedCounter | _BatchedHistogram] = []
        self.due = False  # a write is scheduled

    def schedule(self) -> None:
        self.due = True
        try:
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
        except RuntimeError:  # no event loop: nothing would ever write it
            self.flush()

    def flush(self) -> None:
        self.due = False
        for member in self.members:
            member.flush()


_batches = _Batches()
flush = _batches.flush
atexit.register(flush)


class _BatchedCounter:
    __slots__ = ("_child", "_pending")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._pending = 0.0

    def inc(self, amount: float = 1) -> None:
        self._pending += amount
        if not _batches.due:
            _batches.schedule()

    def flush(self) -> None:
        pending, self._pending = self._pending, 0.0
        if pending:
            self._child.inc(pending)


class _BatchedHistogram:
    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        # prometheus_client's Histogram child: _upper_bounds (ending with
        # +Inf), a value per bucket (_buckets, not cumulative) and _sum
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        self._sum += amount
        # the first bucket whose bound is >= amount, as Histogram.observe
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        if not _batches.due:
            _batches.schedule()

    def flush(self) -> None:
        counts, self._counts = self._counts, [0] * len(self._bounds)
        total, self._sum = self._sum, 0.0
        if not any(counts):
            return
        self._child._sum.inc(total)
        for bucket, count in zip(self._child._buckets, counts, strict=True):
            if count:
                bucket.inc(count)


def _multiprocess(value: Any) -> bool:
    return bool(getattr(value, "_multiprocess", False))


def batched_counter(child: Any, *, batch: bool | None = None) -> Inc:
    """A labelled Counter (its child) for a hot path: batched in multiprocess
    mode (or when `batch` says so), else itself."""
    if not (_multiprocess(child._value) if batch is None else batch):
        return child  # type: ignore[no-any-return]
    batched = _BatchedCounter(child)
    _batches.members.append(batched)
    return batched


def batched_histogram(child: Any, *, batch: bool | None = None) -> Observe:
    """batched_counter for a labelled Histogram."""
    if not (_multiprocess(child._sum) if batch is None else batch):
        return child  # type: ignore[no-any-return]
    batched = _BatchedHistogram(child)
    _batches.members.append(batched)
    return batched


def serve_metrics(listen: HostPort | None, multiprocess_dir: Path | None = None) -> None:
    """Serve /metrics: this process's, or (`multiprocess_dir`) those every
    worker wrote there, added up."""
    if listen is None:
        return
    registry = None
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    try:
        if registry is None:
            start_http_server(listen.port, addr=listen.host)
        else:
            start_http_server(listen.port, addr=listen.host, registry=registry)
    except OSError as exc:
        log.warning("metrics endpoint not started on %s: %s", listen, exc)
        return
    log.info("metrics on http://%s/metrics", listen)


def _waiting(pool: asyncpg.Pool) -> int:
    """Callers queued in asyncpg's pool for a connection (asyncpg has no public
    count; its queue is an asyncio.Queue, whose waiters are `_getters`)."""
    queue = getattr(pool, "_queue", None)
    return len(getattr(queue, "_getters", ()) or ())


async def watch_pool(pool: asyncpg.Pool) -> None:
    """Keep the pool gauges current, every POOL_WATCH_SECONDS, until cancelled."""
    while True:
        POOL_IN_USE.set(pool.get_size() - pool.get_idle_size())
        POOL_WAITING.set(_waiting(pool))
        await asyncio.sleep(POOL_WATCH_SECONDS)
