"""Migrations: applied once, safe when replicas start together, refuse a newer
schema; a process that does not migrate refuses a schema not its own."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from core import db
from tests.support import free_port, run_wando, with_database


@pytest.fixture
async def empty_dsn(pg_server_dsn: str) -> str:
    name = f"m_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(pg_server_dsn, name)


async def test_applied_once_then_nothing_to_do(empty_dsn: str) -> None:
    conn = await asyncpg.connect(empty_dsn)
    try:
        first = await db.migrate(conn)
        second = await db.migrate(conn)
        assert first == [m.version for m in db.known_migrations()] and first
        assert second == []
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {"organizations", "scim_tokens", "users", "groups", "group_members"} <= tables
    finally:
        await conn.close()


async def test_replicas_starting_together_do_not_race(empty_dsn: str) -> None:
    conns = [await asyncpg.connect(empty_dsn) for _ in range(8)]
    try:
        results = await asyncio.gather(*(db.migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    applied = [r for r in results if r]
    assert len(applied) == 1  # exactly one replica did the work, none failed
    conn = await asyncpg.connect(empty_dsn)
    try:
        count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(db.known_migrations())
    finally:
        await conn.close()


async def test_a_newer_schema_stops_start_up(empty_dsn: str) -> None:
    conn = await asyncpg.connect(empty_dsn)
    try:
        await db.migrate(conn)
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
        with pytest.raises(db.SchemaTooNewError, match="9999"):
            await db.migrate(conn)
    finally:
        await conn.close()


def test_every_key_and_index_leads_with_org_id() -> None:
    """Distribution by organisation must stay configuration, not a rewrite."""
    sql = "\n".join(m.sql for m in db.known_migrations())
    reference_tables = {"organizations", "scim_tokens"}
    import re

    for table, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", sql, flags=re.S):
        assert body.strip().startswith("org_id"), table
        if table not in reference_tables:
            assert re.search(r"PRIMARY KEY \(org_id", body), table
    for index, table, columns in re.findall(
        r"CREATE (?:UNIQUE )?INDEX (\w+)\s+ON (\w+) \((.*?)\);", sql, flags=re.S
    ):
        if table not in reference_tables:
            assert columns.strip().startswith("org_id"), index


async def test_role_values_are_backfilled_for_existing_users(empty_dsn: str) -> None:
    """0003 indexes the `roles[].value`s of users stored before it existed."""
    conn = await asyncpg.connect(empty_dsn)
    try:
        await conn.execute(db.CREATE_MIGRATIONS_TABLE)
        for migration in db.known_migrations()[:2]:
            await conn.execute(migration.sql)
            await conn.execute(db.INSERT_APPLIED, migration.version, migration.name)
        org = await conn.fetchval(
            "INSERT INTO organizations (org_id, slug, display_name)"
            " VALUES (gen_random_uuid(), 'acme', 'A') RETURNING org_id"
        )
        documents = {
            "u1": '{"roles": [{"value": "wando-admin", "primary": true}, {"value": "x"}]}',
            "u2": '{"roles": [{"type": "no value"}, {"value": ""}]}',
            "u3": '{"roles": "not a list"}',
        }
        for name, document in documents.items():
            await conn.execute(
                "INSERT INTO users (org_id, user_id, user_name, active, attributes)"
                " VALUES ($1, gen_random_uuid(), $2, true, $3::jsonb)",
                org,
                name,
                document,
            )
        assert await db.migrate(conn) == [m.version for m in db.known_migrations()[2:]]
        rows = await conn.fetch(
            "SELECT u.user_name, v.value FROM user_role_values v"
            " JOIN users u USING (org_id, user_id) ORDER BY 1, 2"
        )
        assert [tuple(r) for r in rows] == [("u1", "wando-admin"), ("u1", "x")]
    finally:
        await conn.close()


async def test_a_local_gateway_refuses_a_schema_that_is_not_its_own(
    empty_dsn: str, tmp_path: Path
) -> None:
    """`wando gateway` with WANDO_CORE=local reads and writes the database but
    never migrates it: on a database short of this build's migrations it stops
    at start-up, exit 1, with one line that names the fix, rather than serving
    and failing statement by statement; on a newer schema it stops too."""
    env = {
        "WANDO_CORE": "local",
        "WANDO_DATABASE_URL": empty_dsn,
        "WANDO_DATA_DIR": str(tmp_path),
        "WANDO_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
    }
    code, _, err = await run_wando("gateway", env=env)
    assert code == 1, err
    assert "lacks migration 1 and" in err and "run `wando migrate`" in err, err
    assert "Traceback" not in err

    conn = await asyncpg.connect(empty_dsn)
    try:
        await db.migrate(conn)
        await db.check_schema(conn)  # current: nothing to say
        await conn.execute("DELETE FROM schema_migrations WHERE version = $1", newest())
        with pytest.raises(db.SchemaTooOldError, match=f"lacks migration {newest()}, which"):
            await db.check_schema(conn)
        await conn.execute(db.INSERT_APPLIED, newest(), "back")
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    finally:
        await conn.close()
    code, _, err = await run_wando("gateway", env=env)
    assert code == 1, err
    assert "version 9999" in err and "Traceback" not in err, err


def newest() -> int:
    return db.known_migrations()[-1].version
