"""python -m bench.ab REV [REV …]: CPU per request of several revisions of the
service, measured side by side on a shared machine.

On a machine that other work shares, CPU per request taken one run after
another moves by ±10 % with the load of the moment (a busier process batches
more events per wake-up); a change worth 2 % cannot be seen. Here every
revision runs at once as its own `wando core` + `wando gateway` on its own
copy of one dataset's database, in one embedded PostgreSQL, and each
workload loads them all at the same moment
(one load process each), so they share the same neighbours: two stacks of
the same revision agreed within 2-4 % (3 rounds of 4 s, 2 cores shared with
other benchmarks), on a quieter day; on 2026-12-06 four stacks of one revision
spread over 6 %, each stack keeping its place in every round (a process's own
luck: its memory layout, its scheduling). So a small difference needs several
stacks of each revision and several runs (`--runs`, fresh processes each, the
order reversed every other run), compared by the mean over stacks.

REV is a git revision, exported with `git archive` into a scratch directory
and run from there (its core, gateway, common, cli and generated protos on
PYTHONPATH), or `.` for the working tree as it is; `REV:off` runs it with
WANDO_ACTIVITY=off (what activity costs, issue #18: `. .:off . .:off`). The
same revision twice shows the noise left (REV#1, REV#2). `--service local`
runs each gateway with WANDO_CORE=local, the core's SCIM services in its own
process (`wando serve`'s shape; bench.service). Printed: the gateway's, the
core's and the stack's PostgreSQL backends' CPU (user + system, /proc; the
backends its pools open during a round too: with_opened) ÷ requests, per round
and as the mean of the rounds; then, over every stack of every run, each
revision's mean and, for REV beside REV:off, what activity costs: over all
stacks, and paired by run (each run's own ratio, then their mean: what the
runs share, the machine's speed of the moment, drops out). PostgreSQL's shared
processes (WAL writer, checkpointer, autovacuum) are left out: the stacks share
one server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from statistics import mean, variance
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench import dataset, loop, processes
from bench.dataset import Dataset
from bench.load import LoadClient
from bench.run import cpu_per_request
from bench.service import Service
from bench.sizes import QUICK, Sizes
from bench.workloads import THROUGHPUT
from core import db, embedded

# the SCIM workloads a gateway serves (not the role lookups, which skip it;
# not the 10,000-member group, which its sizes here do not build)
WORKLOADS = {
    w.name: w.job for w in THROUGHPUT if w.target == "gateway" and w.name != "patch-big-member"
}
SOURCES = ("core", "gateway", "common", "cli", "protos")
WORKING_TREE = "."
ACTIVITY_OFF = ":off"  # git refuses ':' in a branch or tag name


@dataclass
class Stack:
    """One revision's `wando core` + `wando gateway`."""

    rev: str  # as given; REV#2 for a second stack of the same revision
    service: Service
    load: LoadClient

    def pids(self, name: str) -> list[int]:
        return [c.pid for c in self.service.processes if c.name == name]


def export(rev: str, into: Path) -> Path | None:
    """The sources of `rev` under `into`; None for the working tree."""
    rev = rev.removesuffix(ACTIVITY_OFF)
    if rev == WORKING_TREE:
        return None
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, *SOURCES],
        cwd=processes.ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def params(job: str, data: Dataset, index: int, stacks: int) -> dict[str, Any]:
    """What `job` needs, with the users a stack writes to its own (every
    `stacks`-th), so that concurrent PUTs of two stacks do not meet."""
    own = data.sample[index::stacks]
    return {
        "token": data.main.token,
        "user_ids": [u.id for u in data.sample],
        "user_names": [u.user_name for u in data.sample],
        "users": [[u.id, u.user_name] for u in own],
        "groups": data.patch_groups[index::stacks] or data.patch_groups,
        "run": f"ab{index}-{int(time.time() * 1000)}",
    }


async def backends(pool: asyncpg.Pool, stacks: list[Stack]) -> list[list[int]]:
    """Each stack's PostgreSQL backends: the connections its gateway and core
    processes opened (core.db.application_name names the process)."""
    rows = await pool.fetch("SELECT pid, application_name FROM pg_stat_activity")
    by_name: dict[str, list[int]] = {}
    for row in rows:
        by_name.setdefault(row["application_name"] or "", []).append(row["pid"])
    return [
        [
            b
            for pid in (*s.pids("gateway"), *s.pids("core"))
            for b in by_name.get(f"wando {pid}", [])
        ]
        for s in stacks
    ]


def with_opened(
    cpu_s: dict[str, float],
    before: list[int],
    after: list[int],
    cpu_of: Callable[[list[int]], float] = processes.tree_cpu_seconds,
) -> dict[str, float]:
    """A stack's CPU seconds in a round (`cpu_s`, read by its load process
    from the backends it had when the round began, `before`) with the CPU of
    the backends its pools opened during the round (in `after`, not in
    `before`) added to PostgreSQL's: each was born in the round, so all its
    CPU is the round's. Without them, a stack whose pool opened a connection
    mid-round was counted cheaper than it was. On `POST /Users` that was a
    stack without activity in the runs checked (activity's batches had
    already opened one more connection on the others), and activity's cost
    in PostgreSQL looked two to three times larger in the first round than
    in the second (session 9)."""
    born = sorted(set(after) - set(before))
    if not born:
        return cpu_s
    return {**cpu_s, "postgres": cpu_s.get("postgres", 0.0) + cpu_of(born)}


async def measure(
    stacks: list[Stack],
    data: Dataset,
    job: str,
    seconds: float,
    in_flight: int,
    postgres: list[list[int]],
    pool: asyncpg.Pool | None = None,
) -> list[dict[str, Any]]:
    """One round of `job` on every stack at once; a row per stack. `postgres`:
    each stack's backends (backends()) when the round starts; with `pool`,
    those opened during the round count too (with_opened)."""
    specs = [
        {
            "job": job,
            "params": params(job, data, n, len(stacks)),
            "http": s.service.scim_base,
            "in_flight": in_flight,
            "seconds": seconds,
            "warmup_seconds": 1.0,
            "cpu": {
                "gateway": s.pids("gateway"),
                "core": s.pids("core"),
                "postgres": postgres[n],
            },
        }
        for n, s in enumerate(stacks)
    ]
    runs = (s.load.run(spec) for s, spec in zip(stacks, specs, strict=True))
    results = await asyncio.gather(*runs)
    opened = [[]] * len(stacks) if pool is None else await backends(pool, stacks)
    rows = []
    for stack, result, before, after in zip(stacks, results, postgres, opened, strict=True):
        cpu = cpu_per_request(with_opened(result["cpu_s"], before, after), result["requests"])
        rows.append(
            {
                "rev": stack.rev,
                "requests": result["requests"],
                "errors": result["errors"],
                "error_samples": result["error_samples"],
                "gateway_ms": cpu.get("gateway", 0.0),
                "core_ms": cpu.get("core", 0.0),
                "postgres_ms": cpu.get("postgres", 0.0),
            }
        )
    return rows


async def run(
    revs: list[str],
    workloads: list[str],
    rounds: int,
    seconds: float,
    in_flight: int,
    users: int,
    mode: str = "split",
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wando-ab-") as tmp:
        work = Path(tmp)
        pg = await embedded.start(work / "pg")
        postmaster = processes.postmaster_pid(work / "pg" / "postgres")
        stacks: list[Stack] = []
        try:
            sources = [export(rev, work / f"stack{n}" / "src") for n, rev in enumerate(revs)]
            sizes = replace(QUICK, users=users, small_import_users=10)
            (work / "builder").mkdir()
            builder = Service(
                _database(pg.dsn, TEMPLATE), work / "builder", postmaster, mode, source=sources[0]
            )
            data = await _template(pg.dsn, builder, sizes)
            for n, rev in enumerate(revs):
                home = work / f"stack{n}"
                home.mkdir(exist_ok=True)
                dsn = await _copy(pg.dsn, f"{TEMPLATE}{n}")
                activity = not rev.endswith(ACTIVITY_OFF)
                service = Service(dsn, home, postmaster, mode, activity=activity, source=sources[n])
                await service.start()
                label = rev if revs.count(rev) == 1 else f"{rev}#{revs[:n].count(rev) + 1}"
                stacks.append(Stack(label, service, await LoadClient.start(home / "load.log")))
            pool = await db.create_pool(pg.dsn, min_size=1, max_size=4)
            try:
                # a pass of each workload that counts for nothing: the pools
                # open their connections, which backends() then finds
                for name in workloads:
                    await measure(stacks, data, WORKLOADS[name], 1.0, in_flight, [[]] * len(stacks))
                rows = []
                for r in range(rounds):
                    for name in workloads:
                        postgres = await backends(pool, stacks)
                        job = WORKLOADS[name]
                        measured = await measure(
                            stacks, data, job, seconds, in_flight, postgres, pool
                        )
                        for row in measured:
                            rows.append({"workload": name, "round": r, **row})
                            print(_line(rows[-1]), flush=True)
            finally:
                await pool.close()
        finally:
            for stack in stacks:
                await stack.service.stop()
                await stack.load.stop()
            await pg.stop()
    return {"revs": [s.rev for s in stacks], "rows": rows, "means": means(rows)}


# the database the dataset is built in, and each stack's copy of it (+ its index)
TEMPLATE = "wando_ab"


def _database(dsn: str, name: str) -> str:
    """`dsn` with another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _template(dsn: str, builder: Service, sizes: Sizes) -> Dataset:
    """The dataset, built through a service of the first revision in a
    database of its own, which each stack then gets a copy of: stacks share
    no rows, no locks and no counters (the creations of two stacks queued on
    one organisation's role counter, and their activity batches on one lock),
    and no stack is the one that built the data (that one ran hotter)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    finally:
        await conn.close()
    await builder.start()
    try:
        pool = await db.create_pool(builder.dsn, min_size=1, max_size=4)
        try:
            return await dataset.build(builder, pool, sizes)
        finally:
            await pool.close()
    finally:
        await builder.stop()


async def _copy(dsn: str, name: str) -> str:
    """A copy of the template database (once its last session has gone)."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(100):
            try:
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
                break
            except asyncpg.ObjectInUseError:  # the builder's backends are still exiting
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"{TEMPLATE} is still in use")
    finally:
        await conn.close()
    return _database(dsn, name)


def means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per workload and revision: the mean of the rounds."""
    out = []
    for key in dict.fromkeys((r["workload"], r["rev"]) for r in rows):
        mine = [r for r in rows if (r["workload"], r["rev"]) == key]
        gateway, core = mean(r["gateway_ms"] for r in mine), mean(r["core_ms"] for r in mine)
        postgres = mean(r["postgres_ms"] for r in mine)
        out.append(
            {
                "workload": key[0],
                "rev": key[1],
                "gateway_ms": round(gateway, 3),
                "core_ms": round(core, 3),
                "both_ms": round(gateway + core, 3),
                "postgres_ms": round(postgres, 3),
                "all_ms": round(gateway + core + postgres, 3),
                "rounds": [round(r["gateway_ms"] + r["core_ms"], 3) for r in mine],
                "all_rounds": [
                    round(r["gateway_ms"] + r["core_ms"] + r["postgres_ms"], 3) for r in mine
                ],
                "errors": sum(r["errors"] for r in mine),
            }
        )
    return out


def summary(means: list[dict[str, Any]]) -> list[str]:
    """Per workload: each revision's mean over its stacks (REV#2 and REV#1 are
    stacks of REV) with their range, and activity's cost where REV and REV:off
    both ran, ± one standard error of that difference (from the spread of the
    stacks, which dwarfs the spread of one stack's rounds)."""
    lines = []
    for workload in dict.fromkeys(m["workload"] for m in means):
        stacks: dict[str, list[float]] = {}
        for m in means:
            if m["workload"] == workload:
                stacks.setdefault(m["rev"].partition("#")[0], []).append(m["all_ms"])
        for rev, values in stacks.items():
            lines.append(
                f"{workload:<12} {rev:<14} {mean(values):.3f} over {len(values)} stacks "
                f"({min(values):.3f}-{max(values):.3f})"
            )
        for rev, on in stacks.items():
            off = stacks.get(rev + ACTIVITY_OFF)
            if off is None or rev.endswith(ACTIVITY_OFF):
                continue
            cost = mean(on) / mean(off) - 1
            error = (_variance(on) / len(on) + _variance(off) / len(off)) ** 0.5 / mean(off)
            line = f"{workload:<12} {rev:<14} activity costs {cost:.1%} ± {error:.1%}"
            paired = _paired_by_run(means, workload, rev)
            if len(paired) > 1:
                line += (
                    f"; paired by run {mean(paired):.1%} ± "
                    f"{(_variance(paired) / len(paired)) ** 0.5:.1%} ({len(paired)} runs)"
                )
            lines.append(line)
    return lines


def _paired_by_run(means: list[dict[str, Any]], workload: str, rev: str) -> list[float]:
    """Activity's cost in each run alone: its stacks of REV against its stacks
    of REV:off, measured at the same moment. The machine's speed moves from
    one run to the next more than a few per cent; each run's own ratio leaves
    that out, and the spread of the ratios over runs is the error left."""
    runs: dict[int, dict[str, list[float]]] = {}
    for m in means:
        name = m["rev"].partition("#")[0]
        if m["workload"] == workload and name in (rev, rev + ACTIVITY_OFF):
            side = "off" if name.endswith(ACTIVITY_OFF) else "on"
            runs.setdefault(m.get("run", 0), {"on": [], "off": []})[side].append(m["all_ms"])
    return [
        mean(sides["on"]) / mean(sides["off"]) - 1
        for sides in runs.values()
        if sides["on"] and sides["off"]
    ]


def _variance(values: list[float]) -> float:
    return variance(values) if len(values) > 1 else 0.0


def _line(row: dict[str, Any]) -> str:
    both = row["gateway_ms"] + row["core_ms"]
    return (
        f"round {row['round']} {row['workload']:<10} {row['rev']:<12} "
        f"{row['requests']:>6} req  gateway {row['gateway_ms']:.3f}  core {row['core_ms']:.3f}"
        f"  both {both:.3f}  postgres {row['postgres_ms']:.3f}"
        f"  all {both + row['postgres_ms']:.3f} ms/req  errors {row['errors']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument(
        "revs",
        nargs="+",
        metavar="REV",
        help="git revisions, or . (working tree); REV:off without activity",
    )
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, default=["get-user"])
    parser.add_argument("--service", choices=("split", "local"), default="split")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per workload and round")
    parser.add_argument("--in-flight", type=int, default=8, help="per stack")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=1, help="each with fresh stacks")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args()
    results: dict[str, Any] = {"revs": args.revs, "rows": [], "means": []}
    for n in range(args.runs):
        print(f"run {n + 1} of {args.runs}", flush=True)
        revs = args.revs if n % 2 == 0 else args.revs[::-1]  # no revision keeps a place
        one = loop.run(
            run(
                revs, args.only, args.rounds, args.seconds, args.in_flight, args.users, args.service
            )
        )
        results["rows"] += [{"run": n, **r} for r in one["rows"]]
        results["means"] += [{"run": n, **m} for m in one["means"]]
    print("\nmean of the rounds (CPU ms per request):")
    for m in results["means"]:
        print(
            f"  {m['workload']:<10} {m['rev']:<12} gateway {m['gateway_ms']:.3f}  "
            f"core {m['core_ms']:.3f}  both {m['both_ms']:.3f}  postgres {m['postgres_ms']:.3f}  "
            f"all {m['all_ms']:.3f}  rounds {m['all_rounds']}"
        )
    print("\nover every stack (all processes, CPU ms per request):")
    for line in summary(results["means"]):
        print(f"  {line}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))
    failed = [m for m in results["means"] if m["errors"]]
    for m in failed:
        print(f"FAILED: {m['workload']} on {m['rev']}: {m['errors']} requests", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
