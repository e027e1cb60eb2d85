"""Issue #8, item 2: the service's own processes fail or are stopped.

Real `wando core`, `wando gateway` and `wando serve` subprocesses on a
PostgreSQL of the drill's own:

- the core is SIGKILLed while Okta-style writes flow through a separate
  gateway, and started again on the same address: the gateway answers 503
  with Retry-After meanwhile, reconnects by itself, and no acknowledged write
  is lost or half applied (each request is one transaction);
- SIGTERM during a request that is still running: the process stops taking
  new work, lets that request finish with its 2xx, and exits 0.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.drills.faults_support import (
    RECOVERY_BOUND_SECONDS,
    DrillPostgres,
    OktaLoad,
    WandoProcess,
    check_writes,
    drill_postgres,
    load_running,
    new_org,
    service_env,
    until_write_succeeds,
    wando,
)
from tests.drills.report import heavy, report
from tests.gateway.support import GROUP_URN, OKTA_HEADERS, PREFIX, SCIM_JSON, okta_user
from tests.support import free_port

DEADLINE_SECONDS = 3.0
GRACE_SECONDS = 10
CORE_READY = "core gRPC listening"
GATEWAY_READY = "gateway listening"


@pytest.fixture(scope="module")
async def drill_pg() -> AsyncIterator[DrillPostgres]:
    async with drill_postgres("processes") as pg:
        yield pg


class Topology:
    """Addresses and settings of one drill's core and gateway processes."""

    def __init__(self, dsn: str) -> None:
        self.grpc = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.base = f"http://{self.http}{PREFIX}"
        common = {
            "WANDO_LOG_LEVEL": "info",  # the processes announce readiness at info
            "WANDO_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
            "WANDO_CORE_TIMEOUT_SECONDS": str(DEADLINE_SECONDS),
        }
        self.core_env = service_env(
            WANDO_DATABASE_URL=dsn,
            WANDO_GRPC_LISTEN=self.grpc,
            WANDO_HTTP_LISTEN=self.http,
            **common,
        )
        self.gateway_env = service_env(WANDO_CORE=self.grpc, WANDO_HTTP_LISTEN=self.http, **common)

    async def core(self) -> WandoProcess:
        return await WandoProcess.start("core", env=self.core_env, ready=CORE_READY)


async def fresh_database(pg: DrillPostgres) -> str:
    return await pg.create_database(f"proc_{uuid.uuid4().hex[:8]}")


async def test_core_killed_mid_load(drill_pg: DrillPostgres) -> None:
    """SIGKILL to `wando core` with a dozen writes in flight through a separate
    `wando gateway`; the core restarts on the same address a second later.
    Recovery is timed from the new core being ready to the first 2xx."""
    dsn = await fresh_database(drill_pg)
    where = Topology(dsn)
    cycles = 3 if heavy() else 1
    recoveries: list[float | None] = []
    core = await where.core()
    try:
        secret = await new_org(where.grpc, "initech")
        async with (
            wando("gateway", env=where.gateway_env, ready=GATEWAY_READY) as gateway,
            aiohttp.ClientSession() as http,
        ):
            load = OktaLoad(http, where.base, secret, deadline_seconds=DEADLINE_SECONDS)
            async with load_running(load):
                for _ in range(cycles):
                    await asyncio.sleep(2.0 if not heavy() else 5.0)
                    seen = len(load.answers)
                    core.kill()
                    await core.wait()
                    await asyncio.sleep(1.0)
                    during = load.answers[seen:]
                    core = await where.core()
                    back = time.monotonic()
                    recoveries.append(
                        await until_write_succeeds(load, back, RECOVERY_BOUND_SECONDS)
                    )
                    assert any(a.status == 503 for a in during), "the gateway never noticed"
                await asyncio.sleep(1.0)
            assert await gateway.terminate() == 0, gateway.log
    finally:
        assert await core.terminate() == 0, core.log
    check = await check_writes(dsn, load.acked)
    report(
        "process_faults.core_sigkill",
        **load.figures(),
        **check.figures(),
        cycles=cycles,
        recovery_seconds=recoveries,
    )
    bad = load.bad_answers()
    assert not bad, f"{len(bad)} answers no client may see, e.g. {bad[:5]}"
    for recovery in recoveries:
        assert recovery is not None and recovery <= RECOVERY_BOUND_SECONDS, recoveries
    assert check.lost == 0, check
    assert not check.torn, check.torn


# ---------------------------------------------------------------- SIGTERM

SELECT_LOCK_WAITERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
"""


async def wait_for_lock_waiter(conn: asyncpg.Connection[Any], timeout: float = 20) -> None:
    """Until a session of the service waits for the row lock the drill holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await conn.fetchval(SELECT_LOCK_WAITERS):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the request never reached the row lock")


async def scim(
    http: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None
) -> tuple[int, Any]:
    headers = {**OKTA_HEADERS, "Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON}
    async with http.request(method, url, json=body, headers=headers) as reply:
        return reply.status, await reply.json(content_type=None)


async def probe(url: str, token: str) -> int:
    """A new client's request: its status, or 0 if no connection was accepted."""
    try:
        async with aiohttp.ClientSession() as http:
            status, _ = await scim(http, "GET", url + "/Users?count=1", token)
            return status
    except aiohttp.ClientConnectionError:
        return 0


@asynccontextmanager
async def processes_running(
    where: Topology, *, split: bool
) -> AsyncIterator[tuple[dict[str, WandoProcess], str]]:
    """`wando serve` alone, or `wando core` and `wando gateway`; with an
    organisation. Whatever the drill left running is SIGTERMed on the way out."""
    processes: dict[str, WandoProcess] = {}
    try:
        if split:
            processes["core"] = await where.core()
            processes["gateway"] = await WandoProcess.start(
                "gateway", env=where.gateway_env, ready=GATEWAY_READY
            )
        else:
            processes["serve"] = await WandoProcess.start(
                "serve", env=where.core_env, ready=GATEWAY_READY
            )
        secret = await new_org(where.grpc, "initech")
        yield processes, secret
    finally:
        for process in reversed(processes.values()):
            if process.proc.returncode is None:
                assert await process.terminate() == 0, process.log


@pytest.mark.parametrize("stopped", ["serve", "gateway", "core"])
async def test_sigterm_drains_a_running_request(drill_pg: DrillPostgres, stopped: str) -> None:
    """A group PUT is held inside the core by a row lock the drill takes (so
    it is surely in flight), then `stopped` gets SIGTERM: new work is refused
    while the PUT waits; once the lock is released the PUT answers 200, and
    the process exits 0 well within the grace period."""
    dsn = await fresh_database(drill_pg)
    where = Topology(dsn)
    async with processes_running(where, split=stopped != "serve") as (processes, secret):
        target = processes[stopped]
        async with aiohttp.ClientSession() as http:
            status, group = await scim(
                http,
                "POST",
                where.base + "/Groups",
                secret,
                {"schemas": [GROUP_URN], "displayName": "Held"},
            )
            assert status == 201, group
            status, user = await scim(
                http, "POST", where.base + "/Users", secret, okta_user("held@drill.example")
            )
            assert status == 201, user
            put = {
                "schemas": [GROUP_URN],
                "displayName": "Held",
                "members": [{"value": user["id"]}],
            }
            blocker = await asyncpg.connect(dsn)
            try:
                lock = blocker.transaction()
                await lock.start()
                await blocker.execute(
                    "SELECT 1 FROM groups WHERE group_id = $1 FOR UPDATE", uuid.UUID(group["id"])
                )
                running = asyncio.create_task(
                    scim(http, "PUT", f"{where.base}/Groups/{group['id']}", secret, put)
                )
                await wait_for_lock_waiter(blocker)
                signalled = time.monotonic()
                target.proc.terminate()
                await target.wait_for_log("shutting down")
                await asyncio.sleep(1.0)
                new_work = await probe(where.base, secret)
                assert target.proc.returncode is None, "it exited with a request in flight"
                await lock.rollback()
            finally:
                await blocker.close()
            status, replaced = await asyncio.wait_for(running, DEADLINE_SECONDS + GRACE_SECONDS)
            code = await target.wait(GRACE_SECONDS + 5)
            drained = time.monotonic() - signalled
    report(
        f"process_faults.sigterm_{stopped}",
        in_flight_status=status,
        new_request_status=new_work,
        exit_code=code,
        seconds_from_sigterm_to_exit=round(drained, 2),
        grace_seconds=GRACE_SECONDS,
    )
    assert status == 200, replaced
    assert [m["value"] for m in replaced["members"]] == [user["id"]]
    assert code == 0, target.log
    # new work while draining: a closed port (0) at the gateway, 503 from a core
    assert new_work == (503 if stopped == "core" else 0)
    assert drained < GRACE_SECONDS


@pytest.mark.parametrize("command", ["serve", "gateway"])
async def test_sigterm_during_start_up_stops_cleanly(drill_pg: DrillPostgres, command: str) -> None:
    """SIGTERM as soon as the process logs its configuration, before it
    serves anything (a supervisor giving up on a slow start): it still
    finishes starting, stops in order and exits 0, instead of dying by the
    signal with its embedded PostgreSQL left running."""
    where = Topology(await fresh_database(drill_pg))
    env = where.core_env if command == "serve" else where.gateway_env
    process = await WandoProcess.start(command, env=env, ready="configuration")
    process.proc.terminate()
    code = await process.wait(GRACE_SECONDS + 20)
    report(f"process_faults.sigterm_at_start_{command}", exit_code=code)
    assert code == 0, process.log
    assert "stopped" in process.lines[-1], process.log
