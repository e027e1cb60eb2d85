"""The benchmark suite runs (CI proves it works; it never checks speed), its
structural claims hold (one changed member writes one membership row; the
hot user lookups are index scans), and it fails loudly when requests fail."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bench import loop
from bench.load import LoadClient
from bench.processes import free_port
from bench.run import Run
from bench.sizes import QUICK
from bench.workloads import BASELINES, THROUGHPUT

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `python -m bench --quick`, as the README documents it."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "met?" in result.stdout  # the table was printed
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_every_workload_ran_without_a_failed_request(quick: dict[str, Any]) -> None:
    rows = {row["name"]: row for row in quick["rows"]}
    expected = {w.name for w in (*BASELINES, *THROUGHPUT)} | {
        "import-small",
        "import",
        "group-replace-one",
        "group-replace-all",
        "push-users",
        "push-groups",
        "deactivation",
    }
    assert set(rows) == expected
    for row in rows.values():
        assert row["errors"] == 0, row
        assert row["requests"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0, row
    assert quick["failures"] == []
    # the service's processes were measured, and every target was judged
    assert all(rows[w.name]["peak_rss_mib"]["core"] > 0 for w in THROUGHPUT)
    assert all(rows[w.name]["peak_rss_mib"]["gateway"] > 0 for w in THROUGHPUT)
    judged = [w for w in THROUGHPUT if w.min_ratio is not None or w.reference is not None]
    assert all(rows[w.name]["met"] in (True, False) for w in judged)
    assert {w.name for w in THROUGHPUT} - {w.name for w in judged} == {
        "role-consistent",
        "role-batch-consistent",
    }  # measured beside the cache's figures, without a target
    propagation = quick["checks"]["deactivation propagation p99 (ms)"]
    assert propagation["value"] >= propagation["p50_ms"] > 0
    assert rows["import"]["complete"] and rows["push-users"]["complete"]


def test_ratios_are_taken_against_baselines_of_the_same_run(quick: dict[str, Any]) -> None:
    rows = {row["name"]: row for row in quick["rows"]}
    for w in THROUGHPUT:
        assert w.baseline is not None
        per_second = rows[w.name]["requests_per_second"] * w.lookups
        expected = per_second / rows[w.baseline]["requests_per_second"]
        assert rows[w.name]["ratio"] == pytest.approx(expected, abs=0.01)
        if w.floor is not None:
            floor = rows[w.name]["requests_per_second"] / rows[w.floor]["requests_per_second"]
            assert rows[w.name]["floor_ratio"] == pytest.approx(floor, abs=0.01)
    checks = quick["checks"]
    assert {"import last page vs first", "peak RSS of core, large vs small import"} <= set(checks)
    assert quick["meta"]["event_loop"] == loop.SERVICE_LOOP


def test_one_changed_member_writes_one_membership_row(quick: dict[str, Any]) -> None:
    written = quick["checks"]["group PUT changing one member writes one membership row"]
    assert written["join_rows_written"] == 1
    assert written["leave_rows_written"] == 0
    assert written["leave_members_after"] == written["members"]


def test_user_lookups_are_index_scans(quick: dict[str, Any]) -> None:
    plans = quick["plans"]
    assert "Index Scan using users_org_user_name_key" in plans["userName eq"]
    assert "users_org_external_id_idx" in plans["externalId eq"]
    assert "user_emails_value_idx" in plans["emails.value eq"]
    assert "Seq Scan" not in plans["userName eq"]


@pytest.fixture
async def failing_server() -> AsyncIterator[str]:
    """An HTTP server whose /echo always answers 500."""

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"detail": "broken"}, status=500)

    app = web.Application()
    app.router.add_get("/echo", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_failed_request_fails_the_run(failing_server: str, tmp_path: Path) -> None:
    load = await LoadClient.start(tmp_path / "load.log")
    try:
        spec = {"job": "chain_echo", "http": failing_server, "in_flight": 2, "seconds": 5}
        run = Run(QUICK, selected=set(), load=load, started=0.0)
        row = await run.measure("chain-echo", "echo", {**spec, "max_jobs": 10}, [])
    finally:
        await load.stop()
    assert row["errors"] == 10
    assert row["error_kinds"] == {"GET /echo -> 500": 10}
    assert run.failures and "GET /echo -> 500" in run.failures[0]
