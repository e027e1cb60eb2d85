"""`python -m bench.tracing` runs, and measures what it says: with a provider
each path makes its span (more work), without one it makes none."""

from __future__ import annotations

import pytest

from bench import tracing as bench_tracing


def test_bench_tracing_measures_off_and_on(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_tracing.main(["--calls", "10", "--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 3
    for row in rows:
        name, _, _, off, on = (cell.strip() for cell in row.strip("|").split("|"))
        assert int(on) > int(off) + 500, name  # a span's work, only when on
