"""A pytest plugin: every SQL statement the core sends pins one organisation.

docs/scale-out.md says each table is distributed by `org_id` or is a reference
table, so one PostgreSQL can become Citus without a rewrite. This plugin holds
the core to that, with the statements it really sends rather than the ones we
remember writing: for the whole session it records the text of every
statement that code under core/ hands to asyncpg (its listing and filter SQL
is built at run time, so reading the module constants would miss it), and at
the end it parses each distinct text with PostgreSQL's own parser
(tests/orgscope.py) and fails the run, listing them, if one reads or writes a
distributed table without pinning that table's `org_id`.

Statements the tests send themselves (seeding, checks) are not the core's and
are not recorded: the nearest caller outside asyncpg must be in core/.
Migrations are deploy steps that run before a database is distributed, and
may touch every organisation at once (a backfill); they are not recorded
either. `orgscope.EXCEPTIONS` lists the few runtime statements that are
justified in touching several organisations, each with its reason.

Registered from tests/conftest.py; tests/test_org_scoping.py proves it catches
what it should.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg.connection
import pytest

from tests import orgscope

CORE = str(Path(__file__).resolve().parents[2] / "core") + "/"
ASYNCPG = str(Path(asyncpg.connection.__file__).resolve().parent) + "/"
MIGRATIONS = (CORE + "db.py", "migrate")
# frames between asyncpg and the code that sent the statement
PASS_THROUGH = ("/contextlib.py", "/common/tracing.py")
MAX_SHOWN = 20

_seen: dict[str, str] = {}  # statement text -> the core function that sent it
_originals: dict[str, Any] = {}


def _sender(frame: FrameType | None) -> str | None:
    """The core function that sent the statement being prepared, or None when
    the sender is not the core (a test) or is the migration runner."""
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith(ASYNCPG) and not path.endswith(PASS_THROUGH):
            break
        frame = frame.f_back
    if frame is None or not frame.f_code.co_filename.startswith(CORE):
        return None
    sender = f"{frame.f_code.co_filename[len(CORE) :]}:{frame.f_code.co_name}"
    while frame is not None:
        if (frame.f_code.co_filename, frame.f_code.co_name) == MIGRATIONS:
            return None
        frame = frame.f_back
    return sender


def record(query: str, frame: FrameType | None) -> None:
    if query not in _seen:
        sender = _sender(frame)
        if sender is not None:
            _seen[query] = sender


def _install() -> None:
    cls = asyncpg.connection.Connection
    _originals["_get_statement"] = cls._get_statement
    _originals["execute"] = cls.execute

    async def _get_statement(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        record(query, sys._getframe(1))
        return await _originals["_get_statement"](self, query, *args, **kwargs)

    async def execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if not args:  # with arguments, execute prepares through _get_statement
            record(query, sys._getframe(1))
        return await _originals["execute"](self, query, *args, **kwargs)

    cls._get_statement = _get_statement  # type: ignore[method-assign]
    cls.execute = execute  # type: ignore[method-assign]


def _uninstall() -> None:
    cls = asyncpg.connection.Connection
    for name, original in _originals.items():
        setattr(cls, name, original)
    _originals.clear()


def findings() -> list[tuple[str, orgscope.Finding]]:
    """(sender, finding) for every recorded statement not scoped to one org."""
    found = []
    for query, sender in _seen.items():
        found.extend((sender, f) for f in orgscope.check(query))
    return found


def seen() -> dict[str, str]:
    return _seen


def pytest_sessionstart(session: pytest.Session) -> None:
    _install()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _uninstall()
    if findings():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    found = findings()
    if not found:
        terminalreporter.write_line(
            f"SQL scan: {len(_seen)} distinct statements from core/, each pins one organisation"
        )
        return
    terminalreporter.section("statements not scoped to one organisation", red=True, bold=True)
    terminalreporter.write_line(
        f"{len(found)} problems in statements the core sent (tests/drills/sqlscan.py);"
        " the run fails:"
    )
    for sender, finding in found[:MAX_SHOWN]:
        terminalreporter.write_line(f"  {sender}: {finding}")
    if len(found) > MAX_SHOWN:
        terminalreporter.write_line(f"  … and {len(found) - MAX_SHOWN} more")
