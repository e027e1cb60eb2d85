"""The results: ratios and targets per workload, the table printed at the end
of a run, and bench/out/results.json (for bench/RESULTS.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench import loop, targets
from bench.sizes import Sizes
from bench.workloads import THROUGHPUT

RSS_NOTE = (
    "peak RSS: the largest VmRSS sampled every 0.1 s during the workload; for the imports, "
    "VmHWM of core and gateway processes started just before each import"
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def meta(
    sizes: Sizes, quick: bool, wall_seconds: float, phase_seconds: dict[str, float]
) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "event_loop": loop.SERVICE_LOOP,
        "quick": quick,
        "sizes": dataclasses.asdict(sizes),
        "wall_seconds": round(wall_seconds, 1),
        "phase_seconds": phase_seconds,
        "reference": targets.REFERENCE_NOTE,
        "rss": RSS_NOTE,
    }


def evaluate(rows: list[dict[str, Any]]) -> None:
    """Add baseline, ratio, xreference, target and met? to each row that has a target."""
    by_name = {row["name"]: row for row in rows}
    for w in THROUGHPUT:
        row = by_name.get(w.name)
        if row is None:
            continue
        goals, met = [], []
        base = by_name.get(w.baseline or "")
        if w.lookups > 1:
            row["lookups_per_second"] = round(row["requests_per_second"] * w.lookups)
        if base is not None and w.min_ratio is not None and base["requests_per_second"]:
            # a batch's ratio is of the role lookups it makes, one per user
            ratio = row["requests_per_second"] * w.lookups / base["requests_per_second"]
            row.update(baseline=w.baseline, ratio=round(ratio, 2))
            goals.append(f"≥{w.min_ratio:g}x {w.baseline}")
            met.append(ratio >= w.min_ratio)
        if w.reference is not None:
            _versus_reference(row, w.reference, targets.VS_REFERENCE, goals, met)
        row.update(target="; ".join(goals), met=all(met) if met else None)
        floor = by_name.get(w.floor or "")
        if floor is not None and floor["requests_per_second"]:
            ratio = row["requests_per_second"] / floor["requests_per_second"]
            row.update(floor=w.floor, floor_ratio=round(ratio, 2))
    large = by_name.get("import")
    if large is not None:
        goals, met = [], []
        _versus_reference(
            large, targets.REFERENCE["import"], targets.PAGES_VS_REFERENCE, goals, met
        )
        large.update(target="; ".join(goals), met=all(met))
    one, every = by_name.get("group-replace-one"), by_name.get("group-replace-all")
    if one is not None and every is not None and every["p50_ms"]:
        # a latency ratio: how much of a full change a one-member change costs
        ratio = one["p50_ms"] / every["p50_ms"]
        one.update(baseline="all (p50)", ratio=round(ratio, 3))


def _versus_reference(
    row: dict[str, Any], reference: float, factor: float, goals: list[str], met: list[bool]
) -> None:
    versus = row["requests_per_second"] / reference
    row["vs_reference"] = round(versus, 2)
    goals.append(f"≥{factor:g}x ref {reference:g}/s")
    met.append(versus >= factor)


def write(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def _met(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _num(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """The rows and checks as aligned text."""
    m = results["meta"]
    lines = [
        f"\nWando benchmark, {m['date']}, {m['machine']['cores']} cores "
        f"({m['machine']['cpu']}), {m['event_loop']} loop"
        f"{', --quick' if m['quick'] else ''}, activity {m.get('activity', 'on')}, "
        f"{m['wall_seconds']} s",
        f"{targets.REFERENCE_NOTE}; {m['rss']}",
        "",
        f"{'workload':52} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'RSS core/gw MiB':>16} {'baseline':>12} {'ratio':>6} {'xref':>6}  target  met?",
    ]
    for row in results["rows"]:
        rss = row.get("peak_rss_mib") or {}
        memory = f"{_num(rss.get('core'))}/{_num(rss.get('gateway'))}"
        lines.append(
            f"{row['title'][:52]:52} {row['requests_per_second']:8.0f} {row['p50_ms']:8.2f} "
            f"{row['p99_ms']:8.2f} {row['errors']:6d} {memory:>16} "
            f"{str(row.get('baseline') or '-')[:12]:>12} {_num(row.get('ratio'), 2):>6} "
            f"{_num(row.get('vs_reference'), 2):>6}  {row.get('target') or '-'}  "
            f"{_met(row.get('met'))}"
        )
        if "lookups_per_second" in row:
            lines.append(f"{'':4}{row['lookups_per_second']:,} role lookups/s (the ratio's figure)")
        if "activity_cost" in row:
            lines.append(
                f"{'':4}activity costs {row['activity_cost']:.1%} of the req/s without it "
                "(the next rows, off, on, off: on vs. the mean of off; target ≤ 5 %)"
            )
        if "floor_ratio" in row:
            lines.append(f"{'':4}{row['floor_ratio']:.2f} of baseline {row['floor']}")
        if "first_page_ms" in row:
            note = f"; {row['note']}" if "note" in row else ""
            lines.append(
                f"{'':4}first page {row['first_page_ms']:.2f} ms, "
                f"last page {row['last_page_ms']:.2f} ms{note}"
            )
    phases = ", ".join(f"{k} {v:g}" for k, v in m["phase_seconds"].items())
    lines += ["", f"wall time by phase (s): {phases}", "", "checks:"]
    for name, check in results["checks"].items():
        value = check.get("value", "")
        if "join_rows_written" in check:
            value = (
                f"join wrote {check['join_rows_written']}, leave wrote "
                f"{check['leave_rows_written']} (of {check['members']:,} members)"
            )
            check = {**check, "target": "1 and 0"}
        lines.append(f"  {name}: {value}  target {check.get('target', '-')}  {_met(check['met'])}")
    return "\n".join(lines)
