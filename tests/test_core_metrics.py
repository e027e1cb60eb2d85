"""The core's own gauges and histograms: the database pool (in use, waiting)
and the role stream's lag, on a real pool and a real stream."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from core import db, metrics
from core.metrics import watch_pool
from tests.scim_client import Scim, okta_user
from tests.support import SERVICE
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import role_service_pb2_grpc


def value(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_pool_gauges_show_connections_in_use_and_callers_waiting(
    database_dsn: str,
) -> None:
    pool = await db.create_pool(database_dsn, min_size=1, max_size=1)
    watcher = asyncio.create_task(watch_pool(pool))
    try:
        async with pool.acquire():
            waiter = asyncio.ensure_future(pool.acquire())  # the pool is full: it waits
            await asyncio.sleep(1.5)  # at least one round of watch_pool
            assert value("wando_db_pool_connections_in_use") == 1
            assert value("wando_db_pool_waiting") == 1
        await pool.release(await waiter)
        await asyncio.sleep(1.5)
        assert value("wando_db_pool_connections_in_use") == 0
        assert value("wando_db_pool_waiting") == 0
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await pool.close()


async def test_each_change_delivered_on_a_stream_is_timed(
    acme: Scim, roles_stub: role_service_pb2_grpc.RoleServiceStub
) -> None:
    before = value("wando_role_stream_lag_seconds_count")
    await acme.create_user(okta_user("lagging@acme.example"))  # its first role is a change
    call = roles_stub.WatchRoleChanges(
        rpb.WatchRoleChangesRequest(organization="acme", after_sequence=0), metadata=SERVICE
    )
    async with asyncio.timeout(20):
        async for _ in call:
            break
    call.cancel()
    assert value("wando_role_stream_lag_seconds_count") == before + 1


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {
        (s.name.removeprefix(name), s.labels.get("le", "")): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(name) and not s.name.endswith("_created")
    }


async def test_batched_metrics_write_the_series_direct_writes_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under `wando serve` the hot paths' metrics are added up in memory and
    written together (core.metrics): the same series and values as one
    write per observation, once the batch is written."""
    monkeypatch.setattr(metrics, "FLUSH_SECONDS", 0)
    registry = CollectorRegistry()
    buckets = (0.001, 0.01, 0.1, 1)
    direct = Histogram("direct_seconds", "d", ["m"], buckets=buckets, registry=registry)
    batched = Histogram("batched_seconds", "b", ["m"], buckets=buckets, registry=registry)
    direct_count = Counter("direct_calls", "d", ["m"], registry=registry)
    batched_count = Counter("batched_calls", "b", ["m"], registry=registry)
    latency = metrics.batched_histogram(batched.labels("x"), batch=True)
    count = metrics.batched_counter(batched_count.labels("x"), batch=True)
    # on each bound, between them, beyond the last, zero
    observed = [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.1, 1, 1.5, 30.0]
    for seconds in observed:
        direct.labels("x").observe(seconds)
        direct_count.labels("x").inc()
        latency.observe(seconds)
        count.inc()
    assert registry.get_sample_value("batched_seconds_count", {"m": "x"}) == 0
    assert registry.get_sample_value("batched_calls_total", {"m": "x"}) == 0
    for _ in range(3):  # the write is scheduled on the event loop
        await asyncio.sleep(0)
    assert _samples(registry, "batched") == _samples(registry, "direct")
    assert registry.get_sample_value("batched_calls_total", {"m": "x"}) == len(observed)
    count.inc()
    metrics.flush()  # as at exit
    assert registry.get_sample_value("batched_calls_total", {"m": "x"}) == len(observed) + 1


def test_metrics_of_a_process_of_its_own_are_written_through() -> None:
    """No multiprocess mode (a scrape reads this process's metrics live): no batching."""
    registry = CollectorRegistry()
    calls = Counter("through_calls", "t", ["m"], registry=registry)
    metrics.batched_counter(calls.labels("x")).inc()
    assert registry.get_sample_value("through_calls_total", {"m": "x"}) == 1
