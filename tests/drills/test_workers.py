"""Issue #15, part 1: `wando serve` as a supervisor of worker processes.

`wando serve --workers 2` (2 core and 2 gateway processes sharing their ports)
on a database of the suite, under Okta-style writes:

- a core worker is SIGKILLed: clients see only 2xx, or 503 with Retry-After
  (the gateways' calls in flight on it fail; new calls go to the other core
  on the shared port); the supervisor logs how it died and starts another;
- then a gateway worker is SIGKILLed: the connections it held are lost (a
  dead process answers nothing), and it is restarted too;
- every acknowledged write is in the database, whole; /readyz answers, and
  the metrics endpoint adds up every worker's requests;
- a second process on the gateway's port fails to start instead of sharing it.

And a worker that cannot start (here: the database refuses its connections)
makes the supervisor give up with exit code 1 after a few tries.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from tests.drills.faults_support import (
    OktaLoad,
    WandoProcess,
    check_writes,
    load_running,
    new_org,
    service_env,
)
from tests.drills.report import heavy, report
from tests.gateway.support import PREFIX
from tests.support import free_port, run_wando, with_database

READY = "serving with 2 core and 2 gateway workers"
DEADLINE_SECONDS = 3.0
_STARTED = re.compile(r"(core|gateway) worker (\d+) started \(pid (\d+)\)")


def worker_pids(log: str, kind: str) -> dict[int, int]:
    """The latest pid of each worker of `kind`, from the supervisor's log."""
    pids: dict[int, int] = {}
    for found in _STARTED.finditer(log):
        if found[1] == kind:
            pids[int(found[2])] = int(found[3])
    return pids


async def answers(load: OktaLoad, more: int, timeout: float = 60) -> None:
    """Until the load has had `more` answers more."""
    target = len(load.answers) + more
    async with asyncio.timeout(timeout):
        while len(load.answers) < target:  # noqa: ASYNC110 - the load has no event to await
            await asyncio.sleep(0.05)


async def restarted(process: WandoProcess, kind: str, index: int, old: int) -> int:
    """Wait for the supervisor to replace worker `index`; its new pid."""
    async with asyncio.timeout(60):
        while worker_pids(process.log, kind).get(index) in (None, old):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return worker_pids(process.log, kind)[index]


@pytest.mark.parametrize("gateway_core", ["local", "grpc"])
async def test_killed_workers_are_replaced_and_lose_nothing(
    database_dsn: str, tmp_path: Path, gateway_core: str
) -> None:
    """By default (local) the gateways hold the SCIM load's transactions
    themselves, so the killed gateway is what tests the writes; with
    WANDO_SERVE_GATEWAY_CORE=grpc the killed core is, as before."""
    grpc, http, metrics = (f"127.0.0.1:{free_port()}" for _ in range(3))
    base = f"http://{http}{PREFIX}"
    env = service_env(
        WANDO_DATABASE_URL=database_dsn,
        WANDO_DATA_DIR=str(tmp_path / "data"),
        WANDO_GRPC_LISTEN=grpc,
        WANDO_HTTP_LISTEN=http,
        WANDO_METRICS_LISTEN=metrics,
        WANDO_WORKERS="2",
        WANDO_LOG_LEVEL="info",
        WANDO_CORE_TIMEOUT_SECONDS=str(DEADLINE_SECONDS),
        WANDO_SERVE_GATEWAY_CORE=gateway_core,
    )
    serve = await WandoProcess.start("serve", env=env, ready=READY)
    try:
        secret = await new_org(grpc, "initech")
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://{http}/readyz") as reply:
                assert reply.status == 200, await reply.text()
            load = OktaLoad(client, base, secret, workers=8, deadline_seconds=DEADLINE_SECONDS)
            async with load_running(load):
                await answers(load, 300 if heavy() else 150)
                core_pid = worker_pids(serve.log, "core")[1]
                serve_kill = len(load.answers)
                os.kill(core_pid, signal.SIGKILL)
                new_core = await restarted(serve, "core", 1, core_pid)
                await answers(load, 150)
                during_core = load.answers[serve_kill:]
                core_bad = load.bad_answers()
                gateway_pid = worker_pids(serve.log, "gateway")[2]
                os.kill(gateway_pid, signal.SIGKILL)
                new_gateway = await restarted(serve, "gateway", 2, gateway_pid)
                await answers(load, 150)
            # another process on the gateway's port is refused, not let in beside it
            code, _, err = await run_wando(
                "gateway", "--http-listen", http, "--core", grpc, env={"WANDO_METRICS_LISTEN": ""}
            )
            assert code == 1 and "cannot start" in err, err
        scraped = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
        )
    finally:
        exit_code = await serve.terminate()
    check = await check_writes(database_dsn, load.acked)
    created = len(load.acked.users)  # each a POST /Users answered 201
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in scraped.splitlines()
        if line.startswith("wando_scim_requests_total{")
        and 'route="/api/auth/scim/v2/Users"' in line
        and 'status="201"' in line
    )
    report(
        f"workers.sigkill_core_then_gateway.{gateway_core}",
        **load.figures(),
        **check.figures(),
        answers_after_core_kill=len(during_core),
    )
    assert f"core worker 1 (pid {core_pid}) was killed by SIGKILL; restarting" in serve.log
    assert f"gateway worker 2 (pid {gateway_pid}) was killed by SIGKILL" in serve.log
    assert new_core != core_pid and new_gateway != gateway_pid
    assert not core_bad, f"answers no client may see, e.g. {core_bad[:5]}"
    assert check.lost == 0, check
    assert not check.torn, check.torn
    assert counted >= created > 0, (counted, created)
    assert "wando_grpc_requests_total{" in scraped and "wando_db_pool_connections_in_use" in scraped
    assert exit_code == 0, serve.log
    assert "stopped" in serve.lines[-1]


async def test_workers_that_keep_failing_to_start_stop_the_supervisor(
    pg_server_dsn: str, tmp_path: Path
) -> None:
    """The database takes one connection of this role at a time: the
    supervisor migrates through it, but every core worker's pool (two
    connections at least) is refused, so no core worker ever serves."""
    name = f"w_{uuid.uuid4().hex[:8]}"
    role = f"r_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
        await admin.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
        parts = urlsplit(with_database(pg_server_dsn, name))
        host = parts.netloc.rpartition("@")[2]
        dsn = urlunsplit(parts._replace(netloc=f"{role}@{host}"))
        env = service_env(
            WANDO_DATABASE_URL=dsn,
            WANDO_DATA_DIR=str(tmp_path / "data"),
            WANDO_GRPC_LISTEN=f"127.0.0.1:{free_port()}",
            WANDO_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
            WANDO_WORKERS="1",
            WANDO_LOG_LEVEL="info",
        )
        serve = await WandoProcess.start("serve", env=env, ready="core worker 1 started")
        code = await serve.wait(180)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
    assert code == 1, serve.log
    assert "times in a row; giving up" in serve.log
    assert serve.log.count("restarting it in") == 4  # then the fifth failure: give up
    assert "gateway worker" not in serve.log  # gateways wait for the cores
    assert "stopped" in serve.lines[-1]


async def test_port_0_and_ctrl_c(database_dsn: str, tmp_path: Path) -> None:
    """Port 0 becomes one port every worker shares (the logs name it), and
    Ctrl-C (SIGINT to the terminal's whole process group) stops the gateways
    first, then the cores, and exits 0."""
    env = service_env(
        WANDO_DATABASE_URL=database_dsn,
        WANDO_DATA_DIR=str(tmp_path / "data"),
        WANDO_GRPC_LISTEN="127.0.0.1:0",
        WANDO_HTTP_LISTEN="127.0.0.1:0",
        WANDO_WORKERS="2",
        WANDO_LOG_LEVEL="info",
    )
    serve = await WandoProcess.start("serve", env=env, ready=READY)
    try:
        http = set(re.findall(r"gateway listening on http://127\.0\.0\.1:(\d+)/", serve.log))
        grpc = set(re.findall(r"core gRPC listening on 127\.0\.0\.1:(\d+)", serve.log))
        assert len(http) == 1 and len(grpc) == 1 and "0" not in http | grpc, serve.log
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{http.pop()}/readyz") as reply,
        ):
            assert reply.status == 200, await reply.text()
        os.killpg(serve.proc.pid, signal.SIGINT)
        code = await serve.wait(60)
    finally:
        serve.kill()
    assert code == 0, serve.log
    stops = [line for line in serve.lines if "draining in-flight" in line or "stopped" in line]
    cores_begin = min(i for i, line in enumerate(stops) if "in-flight calls (" in line)
    # both gateways drained and stopped before any core began to drain
    assert sum("in-flight requests (" in line for line in stops[:cores_begin]) == 2, stops
    assert sum(line.rstrip().endswith("stopped") for line in stops[:cores_begin]) == 2, stops
    assert "stopped" in serve.lines[-1]
