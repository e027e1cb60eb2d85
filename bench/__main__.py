"""python -m bench [--quick] [--only NAME …] [--seconds S]: issue #7's
benchmark suite (see bench/suite.py for what runs in which order)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import sizes, suite
from bench.workloads import NAMES

OUT = Path(__file__).parent / "out" / "results.json"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load the service (core and gateway as processes, on a fresh embedded "
        "PostgreSQL) from a separate process, beside the stack's own ceiling; print a "
        "table and write bench/out/results.json. Exits 1 if any request failed.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (CI, under 30 s)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=NAMES,
        metavar="NAME",
        help=f"run only these workloads (their baselines come along): {', '.join(NAMES)}",
    )
    parser.add_argument("--seconds", type=float, help="seconds per throughput workload")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON results (default {OUT})")
    parser.add_argument(
        "--activity",
        choices=("on", "off", "both"),
        default="on",
        help="the gateway records each SCIM request (WANDO_ACTIVITY; default on); both: "
        "each SCIM workload also through a second gateway without it, right after, "
        "and its cost in the same run",
    )
    args = parser.parse_args()
    return suite.main(
        sizes.choose(args.quick, args.seconds),
        args.only,
        args.quick,
        args.out,
        args.activity,
    )


if __name__ == "__main__":
    sys.exit(main())
