"""python -m bench.compare OFF.json ON.json: what activity recording (issue #18)
costs each SCIM workload, from two runs of `python -m bench --out …`, one with
`--activity off` and one with `--activity on`, on the same machine. Timing is
never asserted; this only prints the figures for bench/RESULTS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _rows(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    results = json.loads(path.read_text())
    return results["meta"], {row["name"]: row for row in results["rows"]}


def compare(off: Path, on: Path) -> str:
    meta_off, rows_off = _rows(off)
    meta_on, rows_on = _rows(on)
    if meta_off.get("activity", True) or not meta_on.get("activity", True):
        raise SystemExit("give the --activity off results first, then the --activity on ones")
    lines = [f"{'workload':52} {'off req/s':>10} {'on req/s':>10} {'cost':>7}"]
    for name, row in rows_on.items():
        before = rows_off.get(name)
        if before is None or not before.get("requests_per_second"):
            continue
        rate_off, rate_on = before["requests_per_second"], row["requests_per_second"]
        cost = (rate_off - rate_on) / rate_off * 100
        title = str(row.get("title", name))[:52]
        lines.append(f"{title:52} {rate_off:>10.0f} {rate_on:>10.0f} {cost:>6.1f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m bench.compare OFF.json ON.json")
    print(compare(Path(sys.argv[1]), Path(sys.argv[2])))
