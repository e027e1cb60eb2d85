"""core.cursors on its own: positions come back as the types SQL compares
them with, and the key is shared through the environment or the data dir."""

from __future__ import annotations

import stat
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core import auth
from core.cursors import Cursors, Position
from core.errors import ExpiredCursor, InvalidCursor

ORG = uuid.uuid4()


def test_a_position_comes_back_typed() -> None:
    cursors = Cursors("key")
    key = (True, "ada", None, datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), uuid.uuid4())
    token = cursors.issue(ORG, "scope", Position(key, backward=True))
    assert cursors.open(token, ORG, "scope") == Position(key, backward=True)


def test_a_cursor_is_bound_to_its_key_organisation_scope_and_time() -> None:
    now = [0.0]
    cursors = Cursors("key", 10, clock=lambda: now[0])
    token = cursors.issue(ORG, "scope", Position(("a",)))
    for key, org, scope in (
        ("other", ORG, "scope"),
        ("key", uuid.uuid4(), "scope"),
        ("key", ORG, "x"),
    ):
        with pytest.raises(InvalidCursor):
            Cursors(key, 10, clock=lambda: now[0]).open(token, org, scope)
    now[0] = 11
    with pytest.raises(ExpiredCursor):
        cursors.open(token, ORG, "scope")


def test_the_secret_comes_from_the_environment_or_the_data_dir(tmp_path: Path) -> None:
    assert auth.load_cursor_secret("configured", tmp_path) == "configured"
    generated = auth.load_cursor_secret(None, tmp_path)
    assert generated.startswith("wando_cursor_") and len(generated) > 40
    assert auth.load_cursor_secret(None, tmp_path) == generated  # kept across restarts
    mode = (tmp_path / auth.CURSOR_SECRET_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def _load_together(data_dir: Path, n: int) -> list[str]:
    start = threading.Barrier(n)
    found: list[str] = []

    def load() -> None:
        start.wait()
        found.append(auth.load_cursor_secret(None, data_dir))

    threads = [threading.Thread(target=load) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def test_processes_starting_together_on_one_data_dir_share_one_secret(tmp_path: Path) -> None:
    """A core and a gateway hosting the local core start at once on one data
    dir: neither fails on the other's file, nor reads it half written."""
    for attempt in range(20):
        data_dir = tmp_path / str(attempt)
        found = _load_together(data_dir, 8)
        assert len(found) == 8 and len(set(found)) == 1 and found[0].startswith("wando_cursor_")
        assert [p.name for p in data_dir.iterdir()] == [auth.CURSOR_SECRET_FILE]
