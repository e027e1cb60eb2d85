"""The results: ratios and targets per workload (ours ÷ the peer, ours ÷ the
stack's ceiling, both from this run), CPU per request, the table printed at
the end of a run, and bench/out/results.json (for bench/RESULTS.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench import loop, peer_process, targets
from bench.sizes import Sizes
from bench.workloads import THROUGHPUT

RSS_NOTE = (
    "peak RSS: the largest VmRSS (process and descendants) sampled every 0.1 s during the "
    "workload; for our imports, VmHWM of service processes started just before each import"
)
CPU_NOTE = (
    "CPU ms/req: user+system CPU during the timed phase ÷ requests; server = ours (service "
    "processes and PostgreSQL with every backend) or the peer's process; load = the load "
    "generator"
)
# the counted workloads judged against the peer, and by which factor
COUNTED_VS_PEER = {
    "import": targets.PAGES_VS_PEER,
    "push-users": targets.VS_PEER,
    "push-groups": targets.VS_PEER,
}


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
    sizes: Sizes,
    quick: bool,
    wall_seconds: float,
    phase_seconds: dict[str, float],
    mode: str,
    with_peer: bool,
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
        "service": {
            "mode": mode,
            "command": {
                "serve": "wando serve",
                "split": "wando core + wando gateway",
                "local": "wando core + wando gateway (WANDO_CORE=local)",
            }[mode],
        },
        "peer": peer_process.describe() if with_peer else None,
        "peer_notes": list(peer_process.NOTES),
        "not_compared": peer_process.NOT_COMPARED,
        "rss": RSS_NOTE,
        "cpu": CPU_NOTE,
    }


def evaluate(rows: list[dict[str, Any]], peer_failures: dict[str, str]) -> None:
    """Add baseline, ratio, vs_peer, target, met? and goal to each of our rows
    that has them."""
    by_name = {row["name"]: row for row in rows}
    for w in THROUGHPUT:
        row = by_name.get(w.name)
        if row is None:
            continue
        goals: list[str] = []
        met: list[bool] = []
        base = by_name.get(w.baseline or "")
        if w.lookups > 1:
            row["lookups_per_second"] = round(row["requests_per_second"] * w.lookups)
        if base is not None and base["requests_per_second"]:
            # a batch's ratio is of the role lookups it makes, one per user
            ratio = row["requests_per_second"] * w.lookups / base["requests_per_second"]
            row.update(baseline=w.baseline, ratio=round(ratio, 2))
            if w.min_ratio is not None:
                goals.append(f"≥{w.min_ratio:g}x {w.baseline}")
                met.append(ratio >= w.min_ratio)
        if w.peer:
            _versus_peer(row, by_name, peer_failures, targets.VS_PEER, goals, met)
        row.update(target="; ".join(goals), met=all(met) if met else None)
        floor = by_name.get(w.floor or "")
        if floor is not None and floor["requests_per_second"]:
            ratio = row["requests_per_second"] / floor["requests_per_second"]
            row.update(floor=w.floor, floor_ratio=round(ratio, 2))
    for name, factor in COUNTED_VS_PEER.items():
        row = by_name.get(name)
        if row is not None:
            goals, met = [], []
            _versus_peer(row, by_name, peer_failures, factor, goals, met)
            row.update(target="; ".join(goals), met=all(met) if met else None)
    one, every = by_name.get("group-replace-one"), by_name.get("group-replace-all")
    if one is not None and every is not None and every["p50_ms"]:
        # a latency ratio: how much of a full change a one-member change costs
        ratio = one["p50_ms"] / every["p50_ms"]
        one.update(baseline="all (p50)", ratio=round(ratio, 3))


def _versus_peer(
    row: dict[str, Any],
    by_name: dict[str, dict[str, Any]],
    peer_failures: dict[str, str],
    factor: float,
    goals: list[str],
    met: list[bool],
) -> None:
    """ours ÷ the peer for one of our rows; no figure if the peer did not run
    it or failed requests of it (peer_note says which)."""
    name = f"peer:{row['name']}"
    theirs = by_name.get(name)
    goals.append(f"≥{factor:g}x peer")
    if name in peer_failures:
        row.update(vs_peer=None, peer_note="the peer failed requests of it: no figure")
        met.append(False)
        return
    if theirs is None or not theirs["requests_per_second"]:
        row.update(vs_peer=None, peer_note="the peer did not run it")
        met.append(False)
        return
    versus = row["requests_per_second"] / theirs["requests_per_second"]
    row.update(
        vs_peer=round(versus, 2),
        peer_requests_per_second=theirs["requests_per_second"],
        peer_cpu_ms_per_request=theirs["cpu_ms_per_request"],
    )
    met.append(versus >= factor)
    if factor == targets.VS_PEER:
        row.update(goal=f"≥{targets.VS_PEER_GOAL:g}x peer", goal_met=versus >= targets.VS_PEER_GOAL)


def write(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def _met(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _num(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cpu(row: dict[str, Any]) -> str:
    cpu = row.get("cpu_ms_per_request") or {}
    return f"{_num(cpu.get('server'), 2)}/{_num(cpu.get('load'), 2)}"


def _row_lines(row: dict[str, Any]) -> list[str]:
    rss = sum((row.get("peak_rss_mib") or {}).values())
    title = "  └ the peer, same workload" if row["server"] == "peer" else row["title"][:46]
    goal = f"{row['goal']} {_met(row.get('goal_met'))}" if "goal" in row else ""
    lines = [
        f"{title:46} {row['server']:>8} {row['requests_per_second']:8.0f} "
        f"{row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['errors']:6d} {rss:8.0f} "
        f"{_cpu(row):>11} {_num(row.get('ratio'), 2):>8} {_num(row.get('vs_peer'), 2):>6}  "
        f"{row.get('target') or '-'}  {_met(row.get('met'))}  {goal}".rstrip()
    ]
    if "peer_note" in row:
        lines.append(f"{'':4}peer: {row['peer_note']}")
    if "lookups_per_second" in row:
        lines.append(f"{'':4}{row['lookups_per_second']:,} role lookups/s (the ratio's figure)")
    if "activity_cost" in row:
        lines.append(
            f"{'':4}activity costs {row['activity_cost']:.1%} of the req/s without it "
            "(the next rows, off, on, off: on vs. the mean of off; target ≤ 5 %)"
        )
    if "workers_ratio" in row:
        lines.append(
            f"{'':4}{row['workers_other']} + {row['workers_other']} workers: "
            f"{row['workers_ratio']:.2f}x the req/s of this service's own workers "
            "(the next rows, other, this, other: the mean of other ÷ this)"
        )
    if "floor_ratio" in row:
        lines.append(f"{'':4}{row['floor_ratio']:.2f} of baseline {row['floor']}")
    if "first_page_ms" in row:
        note = f"; {row['note']}" if "note" in row else ""
        lines.append(
            f"{'':4}first page {row['first_page_ms']:.2f} ms, "
            f"last page {row['last_page_ms']:.2f} ms{note}"
        )
    return lines


def table(results: dict[str, Any]) -> str:
    """The rows and checks as aligned text: each of our rows, and under it
    the peer's on the same workload."""
    m = results["meta"]
    lines = [
        f"\nWando benchmark, {m['date']}, {m['machine']['cores']} cores "
        f"({m['machine']['cpu']}), {m['event_loop']} loop"
        f"{', --quick' if m['quick'] else ''}, activity {m.get('activity', 'on')}, "
        f"{m['wall_seconds']} s",
        f"service: {m['service']['command']}; peer: {m['peer'] or 'not run'}",
        m["rss"],
        m["cpu"],
        "",
        f"{'workload':46} {'server':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'RSS MiB':>8} {'CPU ms/req':>11} {'÷ceiling':>8} {'÷peer':>6}  target  met?  goal",
    ]
    by_name = {row["name"]: row for row in results["rows"]}
    for row in results["rows"]:
        if row["server"] == "peer":
            continue  # printed under ours
        lines += _row_lines(row)
        theirs = by_name.get(f"peer:{row['name']}")
        if theirs is not None:
            lines += _row_lines(theirs)
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
        if "peer" in check:
            value = f"{value}, peer {check['peer']} (ours ÷ peer {check['ours_vs_peer']})"
        lines.append(f"  {name}: {value}  target {check.get('target', '-')}  {_met(check['met'])}")
    lines += ["", "the peer:"]
    lines += [f"  {note}" for note in m["peer_notes"]]
    lines += [f"  no peer figure for {k}: {v}" for k, v in m["not_compared"].items()]
    for name, failed in results.get("peer_failures", {}).items():
        lines.append(f"  the peer could not do {name}: {failed}")
    return "\n".join(lines)
