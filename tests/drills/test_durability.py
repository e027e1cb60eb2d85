"""Issue #8, item 7: the embedded default keeps what it acknowledged.

`wando serve` with its embedded PostgreSQL, as a newcomer runs it: the server
keeps fsync, synchronous_commit and full_page_writes on; and after a hard kill
of the whole service (SIGKILL to `wando serve`'s process group and to every
PostgreSQL process) in the middle of Okta-style writes, `wando serve` starts
again on the same data directory, PostgreSQL recovers from its WAL, and every
write that got a 2xx is there, whole. A clean stop afterwards stops
PostgreSQL too.

A SIGKILL leaves the kernel's page cache intact, so this proves the service
acknowledges only committed writes and recovers from a crash; that they also
survive a power cut rests on the fsync settings checked here. The drill also
gives the dead postmaster's pid to a live stranger process before the
restart, as a container restart does when pids start over.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.drills.faults_support import (
    OktaLoad,
    WandoProcess,
    check_writes,
    kill_postgres,
    load_running,
    new_org,
    pg_settings,
    postmaster,
    service_env,
)
from tests.drills.report import heavy, report
from tests.gateway.support import OKTA_HEADERS, PREFIX
from tests.support import free_port

READY = "gateway listening"
# what a newcomer's `wando serve` must run with for an acknowledged write to
# be on disk (PostgreSQL's defaults; nothing in the service may turn them off)
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
CRASH_RECOVERY = "database system was not properly shut down; automatic recovery in progress"


def reuse_postmaster_pid(pgdata: Path, stranger: int) -> None:
    """Make the dead postmaster's pid that of a live process that is no
    PostgreSQL, as after a container restart, where pids start over."""
    pid_file = pgdata / "postmaster.pid"
    lines = pid_file.read_text().split("\n")
    pid_file.write_text("\n".join([str(stranger), *lines[1:]]))


def socket_dsn(pgdata: Path, database: str) -> str:
    """The embedded server's DSN, from its postmaster.pid (socket directory, port)."""
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    port, socket_dir = lines[3].strip(), lines[4].strip()
    return f"postgresql://postgres:@/{database}?host={socket_dir}&port={port}"


@asynccontextmanager
async def newcomer_setup() -> AsyncIterator[tuple[Path, dict[str, str]]]:
    """A data directory and the settings of a `wando serve` on it."""
    with tempfile.TemporaryDirectory(prefix="wando-drill-durability-") as tmp:
        data_dir = Path(tmp) / "data"
        grpc = f"127.0.0.1:{free_port()}"
        env = service_env(
            WANDO_DATA_DIR=str(data_dir),
            WANDO_GRPC_LISTEN=grpc,
            WANDO_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
            WANDO_LOG_LEVEL="info",
        )
        try:
            yield data_dir, env
        finally:
            kill_postgres(data_dir / "postgres")  # only if a failed drill left it running


async def users_seen_over_scim(base: str, token: str) -> int:
    headers = {**OKTA_HEADERS, "Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/Users?count=1", headers=headers) as reply,
    ):
        assert reply.status == 200, await reply.text()
        total: int = (await reply.json(content_type=None))["totalResults"]
        return total


async def test_acknowledged_writes_survive_a_hard_kill() -> None:
    cycles = 3 if heavy() else 1
    load_seconds = 5.0 if heavy() else 2.0
    killed: list[int] = []
    async with newcomer_setup() as (data_dir, env):
        pgdata = data_dir / "postgres"
        base = f"http://{env['WANDO_HTTP_LISTEN']}{PREFIX}"
        serve = await WandoProcess.start("serve", env=env, ready=READY)
        settings = await pg_settings(socket_dsn(pgdata, "wando"), *DURABLE)
        secret = await new_org(env["WANDO_GRPC_LISTEN"], "initech")
        stranger = await asyncio.create_subprocess_exec("sleep", "600")
        try:
            async with aiohttp.ClientSession() as http:
                load = OktaLoad(http, base, secret, workers=8)
                for _ in range(cycles):
                    async with load_running(load):
                        await asyncio.sleep(load_seconds)
                        # mid-flight: writes are on their way when everything dies
                        serve.kill()
                        killed.append(kill_postgres(pgdata))
                        await serve.wait()
                    reuse_postmaster_pid(pgdata, stranger.pid)
                    serve = await WandoProcess.start("serve", env=env, ready=READY)
        finally:
            stranger.kill()
            await stranger.wait()
        recovered_log = (pgdata / "log").read_text()
        check = await check_writes(socket_dsn(pgdata, "wando"), load.acked)
        over_scim = await users_seen_over_scim(base, secret)
        exit_code = await serve.terminate()
        left_running = postmaster(pgdata) is not None
    report(
        "durability.hard_kill",
        **load.figures(),
        **check.figures(),
        settings=settings,
        cycles=cycles,
        processes_killed=killed,
        users_over_scim=over_scim,
        postgres_left_running_after_clean_stop=left_running,
    )
    assert settings == DURABLE
    assert min(killed) >= 2, "PostgreSQL was not among the killed processes"
    assert recovered_log.count(CRASH_RECOVERY) >= cycles, "PostgreSQL never crashed"
    assert len(load.acked.users) > 0, "nothing was acknowledged before the kill"
    assert check.lost == 0, check
    assert not check.torn, check.torn
    assert over_scim >= len(load.acked.users)
    assert exit_code == 0, serve.log
    assert not left_running, "a clean stop after the crash left PostgreSQL running"
