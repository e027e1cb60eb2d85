"""Issue #8, item 1: PostgreSQL goes away while Okta-style writes flow.

The core and the gateway run as in production (real gRPC, real HTTP) on a
PostgreSQL of the drill's own, which is stopped and restarted, or has every
session terminated, under load. Throughout, a client sees only 2xx or 503
with Retry-After (never a 500, never an answer later than the gateway's
deadline allows); afterwards the service recovers by itself within seconds,
and every write that got a 2xx is in the database, whole.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from core import db
from core.server import start_server
from tests.drills.faults_support import (
    RECOVERY_BOUND_SECONDS,
    DrillPostgres,
    OktaLoad,
    check_writes,
    drill_postgres,
    load_running,
    new_org,
    signal_postgres,
    until_write_succeeds,
)
from tests.drills.report import heavy, report
from tests.gateway.support import PREFIX, USER_URN, gateway, gateway_settings
from tests.support import ADMIN_TOKEN, SERVICE_TOKEN

DEADLINE_SECONDS = 3.0  # WANDO_CORE_TIMEOUT_SECONDS for the drill's gateway
WARM_SECONDS = 1.5 if not heavy() else 5.0
OUTAGE_SECONDS = 2.0 if not heavy() else 8.0


@pytest.fixture(scope="module")
async def drill_pg() -> AsyncIterator[DrillPostgres]:
    async with drill_postgres("outage") as pg:
        yield pg


@asynccontextmanager
async def service(pg: DrillPostgres) -> AsyncIterator[tuple[OktaLoad, str, str]]:
    """Core and gateway on a fresh database of `pg`, and a load against them;
    yields (load, DSN, database name)."""
    name = f"outage_{uuid.uuid4().hex[:8]}"
    dsn = await pg.create_database(name)
    pool = await db.connect_and_migrate(dsn, min_size=2, max_size=10)
    core = await start_server(pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN)
    try:
        secret = await new_org(f"127.0.0.1:{core.port}", "initech")
        settings = gateway_settings(
            f"127.0.0.1:{core.port}",
            WANDO_RATE_LIMIT_PER_SECOND="0",
            WANDO_CORE_TIMEOUT_SECONDS=str(DEADLINE_SECONDS),
        )
        async with gateway(settings) as client:
            base = str(client.make_url(PREFIX))
            yield (
                OktaLoad(client.session, base, secret, deadline_seconds=DEADLINE_SECONDS),
                dsn,
                name,
            )
    finally:
        await core.stop(0)
        await pool.close()


def assert_service_behaved(load: OktaLoad, recovery: float | None) -> None:
    bad = load.bad_answers()
    assert not bad, f"{len(bad)} answers no client may see, e.g. {bad[:5]}"
    assert recovery is not None, f"no write succeeded {RECOVERY_BOUND_SECONDS}s after the fault"
    assert recovery <= RECOVERY_BOUND_SECONDS


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart_under_load(drill_pg: DrillPostgres, mode: str) -> None:
    """`fast`: PostgreSQL ends every session and shuts down cleanly;
    `immediate`: it stops as if it crashed, and replays its WAL on start."""
    cycles = 3 if heavy() else 1
    recoveries: list[float | None] = []
    async with service(drill_pg) as (load, dsn, _):
        async with load_running(load):
            for _ in range(cycles):
                await asyncio.sleep(WARM_SECONDS)
                seen = len(load.answers)
                await drill_pg.stop(mode)
                await asyncio.sleep(OUTAGE_SECONDS)
                during = load.answers[seen:]
                await drill_pg.start_again()
                back = time.monotonic()
                recoveries.append(await until_write_succeeds(load, back, RECOVERY_BOUND_SECONDS))
                assert any(a.status == 503 for a in during), "the outage was never noticed"
            await asyncio.sleep(1.0)  # writes flow again for a while
        check = await check_writes(dsn, load.acked)
    report(
        f"database_outage.restart_{mode}",
        **load.figures(),
        **check.figures(),
        outage_seconds=OUTAGE_SECONDS,
        cycles=cycles,
        recovery_seconds=recoveries,
    )
    for recovery in recoveries:
        assert_service_behaved(load, recovery)
    assert check.lost == 0, check
    assert not check.torn, check.torn


async def test_every_session_terminated_under_load(drill_pg: DrillPostgres) -> None:
    """All of the service's connections are cut (pg_terminate_backend, as an
    administrator or a failover does), several times, while writes flow."""
    rounds = 10 if heavy() else 3
    ended = 0
    async with service(drill_pg) as (load, dsn, name):
        async with load_running(load):
            await asyncio.sleep(WARM_SECONDS)
            for _ in range(rounds):
                ended += await drill_pg.terminate_backends(name)
                await asyncio.sleep(0.5)
            last_cut = time.monotonic()
            recovery = await until_write_succeeds(load, last_cut, RECOVERY_BOUND_SECONDS)
            await asyncio.sleep(1.0)
        check = await check_writes(dsn, load.acked)
    report(
        "database_outage.sessions_terminated",
        **load.figures(),
        **check.figures(),
        rounds=rounds,
        sessions_terminated=ended,
        recovery_seconds=recovery,
    )
    assert ended >= rounds, "the drill cut no connections"
    assert_service_behaved(load, recovery)
    assert check.lost == 0, check
    assert not check.torn, check.torn


async def test_frozen_database_answers_within_the_deadline(drill_pg: DrillPostgres) -> None:
    """PostgreSQL stops answering without refusing anything (every process
    SIGSTOPped, as in a network partition): each request still gets its answer,
    503 with Retry-After, within the gateway's deadline; none hangs."""
    frozen_for = DEADLINE_SECONDS + 2.0
    async with service(drill_pg) as (load, dsn, _):
        async with load_running(load):
            await asyncio.sleep(WARM_SECONDS)
            seen = len(load.answers)
            assert signal_postgres(drill_pg.pgdata, signal.SIGSTOP) > 1
            try:
                await asyncio.sleep(frozen_for)
            finally:
                signal_postgres(drill_pg.pgdata, signal.SIGCONT)
            thawed = time.monotonic()
            during = load.answers[seen:]
            recovery = await until_write_succeeds(load, thawed, RECOVERY_BOUND_SECONDS)
            await asyncio.sleep(1.0)
        check = await check_writes(dsn, load.acked)
    timed_out = [a for a in during if a.status == 503 and a.seconds >= DEADLINE_SECONDS - 0.5]
    report(
        "database_outage.frozen",
        **load.figures(),
        **check.figures(),
        frozen_seconds=frozen_for,
        deadline_seconds=DEADLINE_SECONDS,
        answered_503_at_deadline=len(timed_out),
        recovery_seconds=recovery,
    )
    assert timed_out, "no request waited for the frozen database"
    assert_service_behaved(load, recovery)
    assert check.lost == 0, check
    assert not check.torn, check.torn


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_no_request_fails_on_connections_that_died_while_idle(
    drill_pg: DrillPostgres, mode: str
) -> None:
    """PostgreSQL restarts while the service is idle: every pooled connection
    died with it. Once PostgreSQL is back, no request may fail because of
    that; the pool must notice a dead connection before using it, or retry
    a statement that never reached the server."""
    async with service(drill_pg) as (load, dsn, _):
        await load.create_group()
        for n in range(20):  # every pooled connection is used and idle again
            assert (await load.send("GET", f"/Users?startIndex={n + 1}&count=1"))[0] == 200
        await drill_pg.stop(mode)
        await drill_pg.start_again()
        statuses = []
        for n in range(20):
            status, _ = await load.send(
                "POST", "/Users", {"schemas": [USER_URN], "userName": f"idle-{n}@drill.example"}
            )
            statuses.append(status)
        check = await check_writes(dsn, load.acked)
    assert statuses == [201] * 20
    assert check.lost == 0, check
