"""docs/grafana-dashboard.json plots only series the service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import core.metrics
import core.ratelimit
import core.role_service
import core.server
import gateway.metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def test_every_series_on_the_dashboard_is_exported() -> None:
    assert core.metrics and core.ratelimit and core.role_service and core.server and gateway.metrics
    exported = {family.name for family in REGISTRY.collect()}
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    plotted = {name for expr in exprs for name in re.findall(r"\bwando_\w+", expr)}
    assert plotted
    for name in plotted:
        base = next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), name)
        assert base in exported, f"{name} is on the dashboard but not exported"
