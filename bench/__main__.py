"""python -m bench [--quick] [--only NAME …] [--seconds S] [--service serve|split]:
issues #7 and #16's benchmark suite (see bench/suite.py for what runs in which
order)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from bench import sizes, suite
from bench.service import MODES
from bench.workloads import NAMES

OUT = Path(__file__).parent / "out" / "results.json"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load the service (on a fresh embedded PostgreSQL) and the peer "
        "(scim2-server, in memory, under uvicorn) from a separate process, beside the "
        "stack's own ceiling; print a table of ratios from this run and write "
        "bench/out/results.json. Exits 1 if any request to the service failed.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (CI, about a minute)")
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
        "--service",
        choices=MODES,
        default="serve",
        help="the service as one `wando serve` (default, as deployed), as `wando core` "
        "+ `wando gateway` (split), or the same with the gateway's WANDO_CORE=local "
        "(local: the core's SCIM services in the gateway's process, as in serve)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="with --service serve: N workers of each tier (default: one per CPU, as "
        "deployed); compare N=1 with the default for the whole-machine gain",
    )
    parser.add_argument(
        "--rate-limit",
        action="store_true",
        help="charge every SCIM request to the organisation's fleet-wide rate limit, set "
        "too high to be reached (compare with a run without it for the limiter's cost)",
    )
    parser.add_argument(
        "--activity",
        choices=("on", "off", "both"),
        default="on",
        help="the gateway records each SCIM request (WANDO_ACTIVITY; default on); both "
        "(with --service split): each SCIM workload also through a second gateway "
        "without it, right after, and its cost in the same run",
    )
    parser.add_argument(
        "--against-workers",
        type=int,
        metavar="N",
        help="with --service serve: a second `wando serve` with N workers of each tier on "
        "the same database; each SCIM workload also runs on it, alternating with the "
        "first, and their ratio is printed (which worker count to deploy, in one run)",
    )
    args = parser.parse_args()
    if args.activity == "both" and args.service == "serve":
        parser.error(
            "--activity both compares one gateway with another: use --service split or local"
        )
    if args.against_workers is not None:
        if args.service != "serve":
            parser.error("--against-workers compares two `wando serve`: use --service serve")
        if args.against_workers < 1:
            parser.error("--against-workers takes a worker count of 1 or more")
    missing = [m for m in ("scim2_server", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing and suite.wants_peer(set(args.only or NAMES)):
        print(
            f"python -m bench: the peer needs {', '.join(missing)}: "
            "pip install -c requirements.lock -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    chosen = sizes.choose(args.quick, args.seconds)
    return suite.main(
        chosen,
        args.only,
        args.quick,
        args.out,
        args.service,
        args.workers,
        args.rate_limit,
        args.activity,
        args.against_workers,
    )


if __name__ == "__main__":
    sys.exit(main())
