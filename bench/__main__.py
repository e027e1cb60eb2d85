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
        "--serve-workers",
        type=int,
        metavar="N",
        help="run the service as `wando serve` with N workers of each tier instead of one "
        "`wando core` and one `wando gateway` (compare N=1 with N=CPUs for the whole-machine "
        "gain; peak RSS then covers the supervisor only)",
    )
    parser.add_argument(
        "--rate-limit",
        action="store_true",
        help="charge every SCIM request to the organisation's fleet-wide rate limit, set "
        "too high to be reached (compare with a run without it for the limiter's cost)",
    )
    args = parser.parse_args()
    return suite.main(
        sizes.choose(args.quick, args.seconds),
        args.only,
        args.quick,
        args.out,
        args.serve_workers,
        args.rate_limit,
    )


if __name__ == "__main__":
    sys.exit(main())
