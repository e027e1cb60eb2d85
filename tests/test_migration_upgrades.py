"""Every migration, applied to the schema before it with data in the tables.

A rolling deploy runs each migration on a live database, not an empty one.
For each migration N, a database is built at N-1 with customers' data in
every table that exists by then, then migrated to the newest schema. Then:

- the data is all there, and what later migrations derive from it is right:
  role sequences carried on (0002), `roles` values indexed (0003), totals
  counted (0004), activity counted (0010) and kept in chunks (0011);
- the upgraded schema equals a fresh one, catalog entry by catalog entry
  (columns, constraints, indexes, views, functions).

A new migration is covered by this file without a change; a new table wants
a line in SEEDS, so that later migrations meet data in it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from core import db
from tests.support import with_database

ORG = uuid.UUID("00000000-0000-4000-8000-000000000001")
USERS = [uuid.UUID(f"00000000-0000-4000-8000-0000000001{i:02d}") for i in range(3)]
GROUP = uuid.UUID("00000000-0000-4000-8000-000000000201")

# data written right after the migration of that number, as a customer's
# service at that version would have left it
SEEDS: dict[int, list[str]] = {
    1: [
        f"""INSERT INTO organizations (org_id, slug, display_name, role_seq)
            VALUES ('{ORG}', 'acme', 'Acme', 7)""",
        *(
            f"""INSERT INTO users (org_id, user_id, user_name, active, attributes)
                VALUES ('{ORG}', '{u}', 'user{i}@acme.example', {str(i != 2).lower()},
                        '{{"roles": [{{"value": "wando-admin"}}], "emails":
                          [{{"value": "user{i}@acme.example"}}]}}'::jsonb)"""
            for i, u in enumerate(USERS)
        ),
        """INSERT INTO user_emails (org_id, user_id, value_lower)
            SELECT org_id, user_id, lower(user_name) FROM users""",
        f"""INSERT INTO groups (org_id, group_id, display_name, attributes)
            VALUES ('{ORG}', '{GROUP}', 'Admins', '{{}}'::jsonb)""",
        f"""INSERT INTO group_members (org_id, group_id, user_id)
            SELECT '{ORG}', '{GROUP}', user_id FROM users""",
        f"INSERT INTO group_roles (org_id, group_id, role) VALUES ('{ORG}', '{GROUP}', 'admin')",
        f"""INSERT INTO role_changes (org_id, seq, user_id, old_role, new_role, cause)
            SELECT '{ORG}', s, '{USERS[0]}', NULL, 'admin', 'mapping set'
            FROM generate_series(1, 7) AS s""",
        f"""INSERT INTO audit_events (org_id, actor, action, resource_type, resource_id)
            VALUES ('{ORG}', 'scim', 'create', 'User', '{USERS[0]}')""",
    ],
    3: [
        f"""INSERT INTO role_value_mappings (org_id, value, role)
            VALUES ('{ORG}', 'wando-admin', 'boss')""",
    ],
    8: [
        f"""INSERT INTO activity (org_id, request_time, token_id, request_id, client, user_agent,
                                  method, route, resource_id, filter, status, scim_type, detail,
                                  latency_us)
            SELECT '{ORG}', now() - n * interval '1 minute', '{GROUP}', 'r' || n, 'okta', 'Okta',
                   'GET', '/Users', '', '', 200, '', '', 1000
            FROM generate_series(1, 4) AS n""",
    ],
}

NewDatabase = Callable[[], Awaitable[asyncpg.Connection]]

CATALOG = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = 'public'""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')""",
}


@pytest.fixture
async def new_database(pg_server_dsn: str) -> AsyncIterator[NewDatabase]:
    made: list[str] = []

    async def make() -> asyncpg.Connection:
        name = f"m_{uuid.uuid4().hex[:12]}"
        server = await asyncpg.connect(pg_server_dsn)
        try:
            await server.execute(f'CREATE DATABASE "{name}"')
        finally:
            await server.close()
        made.append(name)
        return await asyncpg.connect(with_database(pg_server_dsn, name))

    yield make
    server = await asyncpg.connect(pg_server_dsn)
    try:
        for name in made:
            await server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await server.close()


async def build_at(conn: asyncpg.Connection, version: int) -> None:
    """The schema of migrations 1..version, seeded as each version left it."""
    await conn.execute(db.CREATE_MIGRATIONS_TABLE)
    for migration in db.known_migrations()[:version]:
        await conn.execute(migration.sql)
        await conn.execute(db.INSERT_APPLIED, migration.version, migration.name)
        for statement in SEEDS.get(migration.version, []):
            await conn.execute(statement)


async def catalog(conn: asyncpg.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {what: sorted(tuple(r) for r in await conn.fetch(sql)) for what, sql in CATALOG.items()}


def newest() -> int:
    return db.known_migrations()[-1].version


@pytest.mark.parametrize("migration", [m.version for m in db.known_migrations()[1:]])
async def test_each_migration_upgrades_a_database_with_data(
    migration: int, new_database: NewDatabase
) -> None:
    upgraded = await new_database()
    fresh = await new_database()
    try:
        await build_at(upgraded, migration - 1)
        applied = await db.migrate(upgraded)
        assert applied == list(range(migration, newest() + 1))
        await db.migrate(fresh)

        # the data is all there
        names = await upgraded.fetch("SELECT user_name, active FROM users ORDER BY 1")
        assert [tuple(r) for r in names] == [
            ("user0@acme.example", True),
            ("user1@acme.example", True),
            ("user2@acme.example", False),
        ]
        members = await upgraded.fetchval("SELECT count(*) FROM group_members")
        assert members == 3
        # the role stream goes on from where it was: the next change is 8
        last = await upgraded.fetchval("SELECT last_seq FROM role_counters WHERE org_id = $1", ORG)
        assert last == 7
        # `roles` values indexed, whether stored before 0003 or not
        values = await upgraded.fetch(
            "SELECT user_id, value FROM user_role_values WHERE org_id = $1 ORDER BY 1", ORG
        )
        assert [(r["user_id"], r["value"]) for r in values] == [(u, "wando-admin") for u in USERS]
        # totals kept, for listings without a filter
        totals = {
            r["resource"]: r["n"]
            for r in await upgraded.fetch(
                "SELECT resource, sum(n)::int AS n FROM resource_counts"
                " WHERE org_id = $1 GROUP BY resource",
                ORG,
            )
        }
        assert totals == {"users": 3, "groups": 1}
        # activity counted, for the pruner's cap (0010)
        activity = await upgraded.fetchval("SELECT count(*) FROM activity WHERE org_id = $1", ORG)
        counted = await upgraded.fetchval(
            "SELECT entries FROM activity_counts WHERE org_id = $1", ORG
        )
        assert (activity, counted) == ((4, 4) if migration > 8 else (0, None))
        # activity's rows, each request as it was, moved into chunks (0011)
        kept = await upgraded.fetch(
            "SELECT request_id, route, status, latency_us, request_time > now() - interval '5m'"
            " AS recent FROM activity WHERE org_id = $1 ORDER BY request_time DESC, activity_id",
            ORG,
        )
        assert [tuple(r) for r in kept] == [
            (f"r{n}", "/Users", 200, 1000, True) for n in range(1, 5) if migration > 8
        ]

        assert await catalog(upgraded) == await catalog(fresh)
    finally:
        await upgraded.close()
        await fresh.close()
