"""python -m bench.summary RESULTS.json …: the medians (and ranges) of several
runs' results, as the Markdown tables of bench/RESULTS.md.

Each ratio is taken within its run first, then the median of those ratios is
given: a ratio is only ever of figures from one run."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report, targets
from bench.workloads import THROUGHPUT

Row = dict[str, Any]
EN_DASH = "\u2013"  # ranges, as RESULTS.md writes them


def _figure(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    median = f"{statistics.median(values):,.{digits}f}"
    if len(values) == 1 or min(values) == max(values):
        return median
    return f"{median} ({min(values):,.{digits}f}{EN_DASH}{max(values):,.{digits}f})"


def _over(runs: list[dict[str, Row]], name: str, get: Callable[[Row], Any], digits: int) -> str:
    values = []
    for rows in runs:
        row = rows.get(name)
        value = None if row is None else get(row)
        if value is not None:
            values.append(float(value))
    return _figure(values, digits)


def _met(runs: list[dict[str, Row]], name: str, key: str) -> str:
    verdicts = [rows[name].get(key) for rows in runs if name in rows]
    if not verdicts or any(v is None for v in verdicts):
        return "—"
    yes = sum(1 for v in verdicts if v)
    return "yes" if yes == len(verdicts) else ("no" if yes == 0 else f"{yes} of {len(verdicts)}")


def _rate(row: Row) -> Any:
    """Requests/s, or role lookups/s for a batch."""
    return row.get("lookups_per_second", row["requests_per_second"])


def _peer_names(runs: list[dict[str, Row]]) -> list[str]:
    """Our rows judged against the peer, in run order."""
    names: list[str] = []
    for rows in runs:
        names += [n for n, row in rows.items() if "target" in row and "peer" in str(row["target"])]
    return list(dict.fromkeys(names))


def table(results: list[dict[str, Any]]) -> str:
    runs = [{row["name"]: row for row in r["rows"]} for r in results]
    first = runs[0]
    meta = results[0]["meta"]
    lines = [
        f"{len(results)} run(s) of `{meta['service']['command']}` vs the peer, "
        f"{', '.join(r['meta']['date'] for r in results)}; "
        f"{meta['machine']['cores']} cores ({meta['machine']['cpu']}), "
        f"{meta['machine']['memory_gib']} GiB; peer: {meta['peer']}",
        report.CPU_NOTE,
        "",
        "| workload | ours req/s | peer req/s | ÷ peer | target | met | goal ≥ "
        f"{targets.VS_PEER_GOAL:g} | CPU ms/req ours | CPU ms/req peer | "
        "load ms/req ours / peer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in _peer_names(runs):
        peer = f"peer:{name}"
        load = (
            f"{_over(runs, name, lambda r: r['cpu_ms_per_request'].get('load'), 2)} / "
            f"{_over(runs, peer, lambda r: r['cpu_ms_per_request'].get('load'), 2)}"
        )
        lines.append(
            f"| {first[name]['title']} "
            f"| {_over(runs, name, lambda r: r['requests_per_second'], 0)} "
            f"| {_over(runs, peer, lambda r: r['requests_per_second'], 0)} "
            f"| {_over(runs, name, lambda r: r.get('vs_peer'), 2)} "
            f"| {first[name]['target']} | {_met(runs, name, 'met')} "
            f"| {_met(runs, name, 'goal_met') if 'goal' in first[name] else '—'} "
            f"| {_over(runs, name, lambda r: r['cpu_ms_per_request'].get('server'), 2)} "
            f"| {_over(runs, peer, lambda r: r['cpu_ms_per_request'].get('server'), 2)} "
            f"| {load} |"
        )
    pushes = [r["checks"].get("first push wall time (s)") for r in results]
    if all(p and "peer" in p for p in pushes):
        walls = [[float(p[k]) for p in pushes if p] for k in ("value", "peer", "ours_vs_peer")]
        lines.append(
            f"| first push, wall time (s) | {_figure(walls[0], 1)} | {_figure(walls[1], 1)} "
            f"| {_figure(walls[2], 2)} | ≥{targets.VS_PEER:g}x peer | — | — | — | — | — |"
        )
    lines += [
        "",
        "| ours alone | req/s | p50 ms | p99 ms | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    alone = [w.name for w in THROUGHPUT if not w.peer] + ["group-replace-one", "import-small"]
    for name in (n for n in alone if n in first):
        lines.append(
            f"| {first[name]['title']} "
            f"| {_over(runs, name, _rate, 0)} "
            f"| {_over(runs, name, lambda r: r['p50_ms'], 1)} "
            f"| {_over(runs, name, lambda r: r['p99_ms'], 1)} "
            f"| {first[name].get('baseline') or '—'} "
            f"| {_over(runs, name, lambda r: r.get('ratio'), 2)} "
            f"| {first[name].get('target') or '—'} | {_met(runs, name, 'met')} |"
        )
    lines += _side_by_side(runs)
    failed = [f for r in results for f in r["failures"]]
    peer_failed = [f"{k}: {v}" for r in results for k, v in r.get("peer_failures", {}).items()]
    lines += ["", f"failed requests to the service: {len(failed)}"]
    lines += [f"the peer could not do {f}" for f in peer_failed]
    return "\n".join(lines)


# same-run comparisons a run may carry on its peer rows: (key, heading)
COMPARISONS = (
    ("activity_cost", "activity's cost (1 - on ÷ mean of off; target ≤ 5 %)"),
    ("workers_ratio", "the other worker count's req/s ÷ the default's (`--against-workers`)"),
)


def _side_by_side(runs: list[dict[str, Row]]) -> list[str]:
    lines: list[str] = []
    for key, heading in COMPARISONS:
        names = [n for n in _peer_names(runs) if any(key in rows.get(n, {}) for rows in runs)]
        if not names:
            continue
        lines += ["", f"| workload | {heading} |", "|---|---|"]
        for name in names:
            title = next(rows[name]["title"] for rows in runs if name in rows)
            lines.append(f"| {title} | {_over(runs, name, lambda r, k=key: r.get(k), 3)} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__)
    parser.add_argument("results", nargs="+", type=Path, help="results.json of each run")
    args = parser.parse_args()
    results = [json.loads(p.read_text()) for p in args.results]
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
