"""The benchmark runs (CI proves the suite works; it never checks speed), and
its structural claims hold: one changed member writes one row, and the hot
lookups are index scans."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_group_replace_benchmark_quick() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.group_replace", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((ROOT / "bench" / "out" / "group_replace.json").read_text())
    assert report["replace"]["one_change_membership_rows_written"] == 1
    plans = report["plans"]
    assert "Index Scan using users_org_user_name_key" in plans["userName eq"]
    assert "users_org_external_id_idx" in plans["externalId eq"]
    assert "user_emails_value_idx" in plans["emails.value eq"]
    assert "Seq Scan" not in plans["userName eq"]


def test_roles_benchmark_quick() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.roles", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((ROOT / "bench" / "out" / "roles.json").read_text())
    rows = {name: row for name, row in report.items() if isinstance(row, dict)}
    assert set(rows) == {
        "empty RPC (health check)",
        "GetEffectiveRole by id",
        "GetEffectiveRole by userName",
        "BatchGetEffectiveRoles x100",
    }
    assert all(row["requests"] > 0 and row["p99_ms"] >= row["p50_ms"] for row in rows.values())
