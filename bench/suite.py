"""Issue #7's benchmark, wired in one place: a fresh embedded PostgreSQL, the
baselines, the service as two processes, the data, every workload, and the
report. `python -m bench` runs it (bench/__main__.py parses the flags);
bench.counted holds the import, group-replace and push workloads.

Order, and why:
1. baselines (bare gRPC server, aiohttp chain), then they stop: no idle
   process competes with the service for the 2 cores;
2. the service starts (core migrates), the data is built;
3. the imports, each on freshly started service processes, so each import's
   peak RSS (VmHWM, which cannot be reset) is that import's alone;
4. role lookups and reads, then writes (writes change what reads would see);
5. the group full-list replace and its one-row check; the first push;
6. the query plans of the user lookups.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench import checks, dataset, loop, processes, report
from bench.baselines import prepare_scratch
from bench.counted import run_group_replace, run_imports, run_push
from bench.dataset import Dataset
from bench.load import LoadClient
from bench.processes import PYTHON, free_port
from bench.run import Run
from bench.service import SCIM_PREFIX, SERVICE_TOKEN, Service
from bench.sizes import Sizes
from bench.workloads import BASELINES, NAMES, THROUGHPUT, Workload
from core import db, embedded

# -- baselines ----------------------------------------------------------------


def _needed_baselines(selected: set[str]) -> list[Workload]:
    wanted = {b for w in THROUGHPUT if w.name in selected for b in (w.baseline, w.floor)}
    wanted |= selected
    return [b for b in BASELINES if b.name in wanted]


async def run_baselines(run: Run, pg: embedded.EmbeddedPostgres, work: Path) -> None:
    wanted = _needed_baselines(run.selected)
    if not wanted:
        return
    print("baselines (the stack's ceiling on this machine):", flush=True)
    conn = await asyncpg.connect(pg.server.get_uri("postgres"))
    try:
        await conn.execute("CREATE DATABASE baseline")
    finally:
        await conn.close()
    dsn = pg.server.get_uri("baseline")
    await prepare_scratch(dsn)
    grpc_address, http_port = f"127.0.0.1:{free_port()}", free_port()
    bare = await processes.start(
        "baseline-grpc",
        [PYTHON, "-m", "bench.baselines", "grpc", "--listen", grpc_address, "--dsn", dsn],
        log_dir=work,
        env={},
        ready="ready",
    )
    children = [bare]
    try:
        if any(b.target == "chain" for b in wanted):
            listen = f"127.0.0.1:{http_port}"
            argv = [PYTHON, "-m", "bench.baselines", "http", "--listen", listen]
            argv += ["--grpc", grpc_address, "--dsn", dsn]
            children.append(
                await processes.start("baseline-http", argv, log_dir=work, env={}, ready="ready")
            )
        for b in wanted:
            target = (
                {"grpc": grpc_address}
                if b.target == "bare-grpc"
                else {"http": f"http://127.0.0.1:{http_port}"}
            )
            await run.measure(b.name, b.title, run.throughput_spec(b.job, {}, **target), children)
    finally:
        for child in reversed(children):
            await child.stop()


# -- the service's workloads ----------------------------------------------------


def _params(w: Workload, data: Dataset) -> dict[str, Any]:
    token = data.main.token
    ids = [u.id for u in data.sample]
    pairs = [[u.id, u.user_name] for u in data.sample]
    by_job: dict[str, dict[str, Any]] = {
        "role": {"org": data.main.slug, "service_token": SERVICE_TOKEN, "user_ids": ids},
        "role_batch": {
            "org": data.main.slug,
            "service_token": SERVICE_TOKEN,
            "user_ids": ids,
            "batch": w.lookups,  # the users of one call, as the ratio counts them
        },
        "filter_user": {"token": token, "user_names": [u.user_name for u in data.sample]},
        "get_user": {"token": token, "user_ids": ids},
        "create_user": {"token": token, "run": f"r{int(time.time())}"},
        "replace_user": {"token": token, "users": pairs},
        "member_patch": {"token": token, "groups": data.patch_groups, "users": pairs},
    }
    if w.name == "patch-big-member":
        outsiders = [[u.id, u.user_name] for u in data.outsiders]
        return {"token": token, "groups": [data.big_group], "users": outsiders}
    return by_job[w.job]


async def run_throughput(run: Run, service: Service, data: Dataset, compare: bool) -> None:
    """Each workload; with `compare`, each SCIM one three times more, alternating
    with a second gateway that records no activity (issue #18: its cost, in one run)."""
    quiet = await _quiet_gateway(service) if compare else None
    try:
        for w in THROUGHPUT:
            if not run.wants(w.name):
                continue
            target = (
                {"grpc": service.grpc_address}
                if w.target == "core"
                else {"http": service.scim_base}
            )
            spec = run.throughput_spec(w.job, _params(w, data), **target)
            await run.measure(w.name, w.title, spec, service.children)
            if quiet is None or w.target == "core":
                continue
            # after the usual (first, coldest) pass: off, on, off, so that what
            # drifts meanwhile (caches, the database growing) weighs on both sides
            child, base = quiet
            row = run.rows[-1]
            rates = []
            for n, (label, url, children) in enumerate(
                (
                    ("off", base, [service.core, child]),
                    ("on", service.scim_base, service.children),
                    ("off", base, [service.core, child]),
                )
            ):
                measured = await run.measure(
                    f"{w.name}-activity-{label}-{n}",
                    f"{w.title} (activity {label})",
                    run.throughput_spec(w.job, _params_again(w, data, f"{label}{n}"), http=url),
                    [c for c in children if c is not None],
                )
                rates.append(measured["requests_per_second"])
            if rates[0] + rates[2]:
                row["activity_cost"] = round(1 - rates[1] / ((rates[0] + rates[2]) / 2), 3)
    finally:
        if quiet is not None:
            await quiet[0].stop()


def _params_again(w: Workload, data: Dataset, suffix: str) -> dict[str, Any]:
    params = _params(w, data)
    if "run" in params:  # users a pass creates must not collide with another's
        params["run"] += f"-{suffix}"
    return params


async def _quiet_gateway(service: Service) -> tuple[processes.Child, str]:
    port = free_port()
    env = service.env() | {"WANDO_HTTP_LISTEN": f"127.0.0.1:{port}", "WANDO_ACTIVITY": "off"}
    child = await processes.start(
        "gateway-quiet",
        [processes.WANDO, "gateway"],
        log_dir=service.work,
        env=env,
        ready="gateway listening",
    )
    return child, f"http://127.0.0.1:{port}{SCIM_PREFIX}"


# -- the run --------------------------------------------------------------------


async def run_service_workloads(run: Run, service: Service, pool: asyncpg.Pool) -> dict[str, str]:
    """Everything on the service, in the module docstring's order; returns the
    query plans of the user lookups."""
    print(f"seeding {run.sizes.users:,} users …", flush=True)
    data = await dataset.build(service, pool, run.sizes)
    run.lap("start the service, build the data")
    print("service workloads:", flush=True)
    if run.wants("import"):
        await run_imports(run, service, data)
        run.lap("imports")
    await run_throughput(run, service, data, run.compare_activity)
    run.lap("throughput workloads")
    if run.wants("group-replace"):
        await run_group_replace(run, service, data, pool)
        run.lap("group replace")
    if run.wants("push"):
        await run_push(run, service, data, pool)
        run.lap("first push")
    return await checks.plans(pool, data.main.id, len(data.users) // 2)


async def run_suite(
    sizes: Sizes, only: list[str] | None, quick: bool, activity: str = "on"
) -> dict[str, Any]:
    selected = set(only or NAMES)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wando-bench-") as tmp:
        work = Path(tmp)
        pg = await embedded.start(work / "pg")
        load = await LoadClient.start(work / "load.log")
        run = Run(sizes, selected, load, started)
        run.compare_activity = activity == "both"
        run.lap("start PostgreSQL and the load process")
        try:
            await run_baselines(run, pg, work)
            run.lap("baselines")
            service = Service(pg.dsn, work, activity=activity != "off")
            try:
                await service.start()
                pool = await db.create_pool(pg.dsn, min_size=1, max_size=4)
                try:
                    plans = await run_service_workloads(run, service, pool)
                finally:
                    await pool.close()
            except BaseException:
                for child in service.children:
                    print(f"--- {child.name} log\n{child.tail()}", flush=True)
                raise
            finally:
                await service.stop()
        finally:
            await load.stop()
            await pg.stop()
    run.lap("stop")
    report.evaluate(run.rows)
    return {
        "meta": report.meta(sizes, quick, time.monotonic() - started, run.phase_seconds)
        | {"activity": activity},
        "rows": run.rows,
        "checks": run.checks,
        "plans": plans,
        "failures": run.failures,
    }


def main(sizes: Sizes, only: list[str] | None, quick: bool, out: Path, activity: str = "on") -> int:
    results = loop.run(run_suite(sizes, only, quick, activity))
    report.write(results, out)
    print(report.table(results))
    print(f"\nwritten to {out}")
    if results["failures"]:
        print("\nFAILED (the figures above do not count):", flush=True)
        for failure in results["failures"]:
            print(f"  {failure}")
        return 1
    return 0
