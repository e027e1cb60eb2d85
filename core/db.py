"""The asyncpg pool and schema migrations.

Migrations are the ordered plain SQL files in core/migrations (NNNN_name.sql),
applied at start-up in one transaction under an advisory lock so that replicas
starting together do not race, and recorded in schema_migrations. A database
migrated by newer code than this stops start-up with a clear error.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import asyncpg
import asyncpg.pool

from common import tracing, wirejson

if TYPE_CHECKING:
    # a connection, whether taken from a pool or not
    Conn = asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

log = logging.getLogger(__name__)

# an arbitrary constant naming "migrations of this service" among advisory locks
MIGRATION_LOCK_ID = 0x57414E444F  # "WANDO"

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

SELECT_APPLIED = "SELECT version FROM schema_migrations ORDER BY version"

INSERT_APPLIED = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaError(Exception):
    """The database's schema is not the one this build runs on."""


class SchemaTooNewError(SchemaError):
    """The database was migrated by a newer version of this service."""


class SchemaTooOldError(SchemaError):
    """The database lacks migrations this build needs, and this process does
    not migrate (a gateway with WANDO_CORE=local): `wando migrate` applies them."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def known_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("core.migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration numbers must run 1, 2, 3, … without gaps: {versions}")
    return found


async def migrate(conn: Conn) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    migrations = known_migrations()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(CREATE_MIGRATIONS_TABLE)
        applied = {row["version"] for row in await conn.fetch(SELECT_APPLIED)}
        _refuse_newer(applied, migrations)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            log.info("applying migration %04d_%s", migration.version, migration.name)
            await conn.execute(migration.sql)
            await conn.execute(INSERT_APPLIED, migration.version, migration.name)
            done.append(migration.version)
        return done


def _refuse_newer(applied: set[int], migrations: list[Migration]) -> None:
    """SchemaTooNewError if a newer build migrated the database."""
    newest_known = migrations[-1].version if migrations else 0
    if applied and max(applied) > newest_known:
        raise SchemaTooNewError(
            f"the database schema is at version {max(applied)}, but this build knows "
            f"migrations only up to {newest_known}: run a newer build of the service"
        )


async def check_schema(conn: Conn) -> None:
    """That the schema is the one this build knows, for a process that reads
    and writes the database but never migrates it (a gateway with
    WANDO_CORE=local): at start-up, rather than as failed statements, one
    request at a time, once it serves."""
    migrations = known_migrations()
    async with conn.transaction():
        # a migration under way (a core starting beside this process) first ends
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", MIGRATION_LOCK_ID)
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        applied = {r["version"] for r in await conn.fetch(SELECT_APPLIED)} if exists else set()
    _refuse_newer(applied, migrations)
    missing = [m.version for m in migrations if m.version not in applied]
    if missing:
        raise SchemaTooOldError(
            f"the database schema lacks migration {missing[0]}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + ", which this build needs: run `wando migrate` (or start a `wando core`) first"
        )


async def migrate_at(dsn: str) -> list[int]:
    """migrate() on one connection of its own to `dsn`."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=wirejson.parse, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Instead of asyncpg's default reset on release (RESET ALL, UNLISTEN *,
    CLOSE ALL, advisory unlock: a second round trip after every request).
    Safe because no code leaves session state behind: settings are SET LOCAL,
    advisory locks are transaction-level (the activity pruner's session lock
    is released, or its connection closed: core.activity.prune), the notifier UNLISTENs before it
    releases its connection, and no cursor outlives its transaction. The pool
    still rolls back an open transaction and drops Python-side listeners
    (Connection._reset) before calling this."""


def application_name() -> str:
    """What this process's connections say they are (pg_stat_activity): an
    operator, or the bench, finds the process by its pid."""
    return f"wando {os.getpid()}"


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
        # which process holds each connection, in pg_stat_activity
        server_settings={"application_name": application_name()},
        # a span per statement only while traces are exported (common.tracing)
        connection_class=tracing.connection_class(),
    )
    return pool


async def connect_and_migrate(dsn: str, **pool_args: Any) -> asyncpg.Pool:
    pool = await create_pool(dsn, **pool_args)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except BaseException:
        await pool.close()
        raise
    return pool
