"""Citus-ready, checked rather than claimed (issue #15, part 4).

tests/drills/sqlscan.py checks every statement the core sends during the
suite; these tests check the checker, the SQL constants no test may happen to
send, and that docs/scale-out.md and the schema agree with its table list.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import asyncpg
import pytest

import core
from core import users
from tests import orgscope
from tests.drills import sqlscan
from tests.scim_client import Scim

DOC = Path(__file__).resolve().parents[1] / "docs" / "scale-out.md"

SCOPED = [
    "SELECT * FROM users WHERE org_id = $1 AND user_id = $2",
    "SELECT * FROM users u WHERE (u.org_id, u.user_id) = ($1, $2)",
    "SELECT * FROM users u JOIN groups g USING (org_id) WHERE u.org_id = $1",
    # through a join to a pinned table, and from an outer query into a lateral one
    """SELECT u.user_id, g.n FROM users u
       JOIN group_members m ON m.org_id = u.org_id AND m.user_id = u.user_id
       CROSS JOIN LATERAL (SELECT count(*) AS n FROM groups x WHERE x.org_id = m.org_id) g
       WHERE u.org_id = $1::uuid""",
    "UPDATE users SET active = false WHERE org_id = $1 AND user_id = $2",
    "DELETE FROM group_members m USING groups g WHERE m.org_id = $1 AND g.org_id = m.org_id",
    "INSERT INTO audit_events (org_id, actor, action, resource_type, resource_id)"
    " VALUES ($1, 'scim', 'create', 'User', $2)",
    # a CTE's rows are checked where the CTE reads them
    """WITH mine AS (SELECT * FROM users WHERE org_id = $1)
       SELECT * FROM mine m JOIN groups g ON g.org_id = m.org_id""",
    # pinned outside a UNION ALL whose branches each give their org_id there
    """SELECT * FROM (
           SELECT 'User' AS kind, r.org_id, r.user_id AS id FROM users r
           UNION ALL SELECT 'Group', g.org_id, g.group_id FROM groups g
       ) AS hits WHERE hits.org_id = $1""",
    # reference tables need no organisation
    "SELECT org_id FROM scim_tokens WHERE token_hash = $1",
    "SELECT * FROM organizations ORDER BY created_at",
]

UNSCOPED = {
    "SELECT * FROM users WHERE user_id = $1": "users (users)",
    "SELECT * FROM users WHERE org_id = ANY($1)": "users (users)",
    "SELECT * FROM users WHERE org_id = $1 OR user_id = $2": "users (users)",
    "SELECT * FROM users u JOIN groups g ON g.org_id = u.org_id": "users (u)",
    "SELECT * FROM users u, groups g WHERE u.org_id = $1": "groups (g)",
    # pinned only through a reference table that is not pinned itself
    "SELECT * FROM users u JOIN organizations o ON o.org_id = u.org_id": "users (u)",
    "UPDATE users SET active = false WHERE user_id = $1": "users (users)",
    "DELETE FROM role_changes WHERE occurred_at < now()": "role_changes (role_changes)",
    "SELECT * FROM organizations o WHERE EXISTS (SELECT 1 FROM users u WHERE u.active)": "(u)",
    "INSERT INTO audit_events (actor) VALUES ('admin')": "does not name org_id",
    # the outer query pins another column of the union, not org_id
    """SELECT * FROM (SELECT r.org_id, r.user_id AS id FROM users r
       UNION ALL SELECT g.org_id, g.group_id FROM groups g) AS h
       WHERE h.id = $1""": "users (r)",
    # one branch gives something else where the others give org_id
    """SELECT * FROM (SELECT r.org_id FROM users r
       UNION ALL SELECT g.group_id FROM groups g) AS h WHERE h.org_id = $1""": "groups (g)",
    "SELECT * FROM mystery_table WHERE org_id = $1": "not classified",
}


def test_every_exception_names_a_statement_the_core_has() -> None:
    """An exception outlives its statement only as a hole in the check."""
    constants = _sql_constants().values()
    for fragment in orgscope.EXCEPTIONS:
        assert any(fragment in sql for sql in constants), fragment


@pytest.mark.parametrize("sql", SCOPED)
def test_statements_that_pin_one_organisation_pass(sql: str) -> None:
    assert orgscope.check(sql) == []


@pytest.mark.parametrize(("sql", "problem"), UNSCOPED.items())
def test_statements_that_do_not_are_found(sql: str, problem: str) -> None:
    found = orgscope.check(sql)
    assert found, sql
    assert any(problem in str(f) for f in found), [str(f) for f in found]


def _sql_constants() -> dict[str, str]:
    found = {}
    for module in pkgutil.walk_packages(core.__path__, "core."):
        for name, value in vars(importlib.import_module(module.name)).items():
            if isinstance(value, str) and re.match(
                r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", value, re.IGNORECASE
            ):
                found[f"{module.name}.{name}"] = value
    return found


def test_every_sql_constant_of_the_core_pins_one_organisation() -> None:
    """Also the statements no test happens to send. Templates ({…}) are
    checked as sent, by the session's scan."""
    constants = {k: v for k, v in _sql_constants().items() if "{" not in v}
    assert len(constants) > 30, "the SQL constants were not found"
    problems = {name: [str(f) for f in orgscope.check(sql)] for name, sql in constants.items()}
    assert {k: v for k, v in problems.items() if v} == {}


async def test_the_scan_sees_what_the_core_sends_and_not_what_tests_send(
    acme: Scim, pool: asyncpg.Pool
) -> None:
    marker = "SELECT user_id FROM users WHERE user_name = 'test-only-statement'"
    await pool.fetch(marker)  # a test's own statement, unscoped on purpose
    # seen again now, whatever ran before in the session (it records a statement once)
    sqlscan.seen().pop(users.INSERT_USERS, None)
    await acme.create_user({"userName": "scan@example.com"})
    assert sqlscan.seen().get(users.INSERT_USERS) == "creations.py:_insert"
    assert marker not in sqlscan.seen()


def _doc_tables() -> dict[str, str]:
    """The table rows of docs/scale-out.md: | `name` | kind | why |."""
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", DOC.read_text(), re.MULTILINE)
    return {name: kind.strip() for name, kind in rows}


def test_the_doc_classifies_every_table_as_the_check_does() -> None:
    assert _doc_tables() == orgscope.TABLES


async def test_every_table_in_the_schema_is_classified(database_dsn: str) -> None:
    conn = await asyncpg.connect(database_dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert {r["table_name"] for r in rows} == set(orgscope.TABLES)
