"""Prometheus metrics: the endpoint (/metrics) on WANDO_METRICS_LISTEN, and
the database pool's gauges.

A standalone `wando core` or `wando gateway` serves its own metrics. Under
`wando serve`, every worker writes its metrics to files in a directory the
supervisor made (prometheus-client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR),
and the supervisor serves them added up across workers on one endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

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
