"""Issues #7 and #16's benchmark, wired in one place: a fresh embedded
PostgreSQL, the baselines, the service (`wando serve`, or core and gateway as
two processes) and the peer (scim2-server, bench.peer_process), the data,
every workload, and the report. `python -m bench` runs it (bench/__main__.py
parses the flags); bench.counted holds the import, group-replace and push
workloads.

Order, and why:
1. baselines (bare gRPC server, aiohttp chain), then they stop: no idle
   process competes with the service for the 2 cores;
2. the service starts (core migrates) and the peer starts; the data is built,
   ours by SQL and the peer's through its SCIM API, side by side (nothing is
   timed yet);
3. the imports, each of ours on freshly started service processes, so each
   import's peak RSS (VmHWM, which cannot be reset) is that import's alone;
   then the peer's;
4. role lookups and reads, then writes (writes change what reads would see);
   each SCIM workload runs on ours, then at once on the peer, so that each
   ratio is taken from neighbouring minutes of this shared machine;
5. the group full-list replace and its one-row check; the first push (ours,
   then the peer's);
6. deactivation propagation, with a second core replica;
7. the query plans of the user lookups.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench import checks, dataset, loop, peer_data, processes, report, targets
from bench.baselines import prepare_scratch
from bench.counted import (
    peer_import,
    peer_push,
    run_deactivation,
    run_group_replace,
    run_imports,
    run_push,
)
from bench.dataset import Dataset
from bench.load import LoadClient
from bench.peer_process import Peer
from bench.processes import PYTHON, free_port
from bench.run import Processes, Run, Server
from bench.service import SCIM_PREFIX, SERVICE_TOKEN, Service
from bench.sizes import Sizes
from bench.workloads import BASELINES, NAMES, PEER_COUNTED, THROUGHPUT, Workload
from core import db, embedded

# -- baselines ----------------------------------------------------------------


def _needed_baselines(selected: set[str]) -> list[Workload]:
    wanted = {b for w in THROUGHPUT if w.name in selected for b in (w.baseline, w.floor)}
    wanted |= selected
    return [b for b in BASELINES if b.name in wanted]


async def run_baselines(
    run: Run, pg: embedded.EmbeddedPostgres, postmaster: int, work: Path
) -> None:
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
    measured = Processes(children, postmaster)
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
            spec = run.throughput_spec(b.job, {}, **target)
            await run.measure(b.name, b.title, spec, measured, "baseline")
    finally:
        for child in reversed(children):
            await child.stop()


# -- the service's workloads ----------------------------------------------------


def _params(w: Workload, data: Dataset) -> dict[str, Any]:
    token = data.main.token
    ids = [u.id for u in data.sample]
    pairs = [[u.id, u.user_name] for u in data.sample]
    by_job: dict[str, dict[str, Any]] = {
        "role": {
            "org": data.main.slug,
            "service_token": SERVICE_TOKEN,
            "user_ids": ids,
            "consistency": w.consistency,
        },
        "role_batch": {
            "org": data.main.slug,
            "service_token": SERVICE_TOKEN,
            "user_ids": ids,
            "batch": w.lookups,  # the users of one call, as the ratio counts them
            "consistency": w.consistency,
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


async def run_throughput(
    run: Run,
    service: Service,
    data: Dataset,
    peer: Peer | None,
    peers: Dataset | None,
    compare: bool = False,
    against: Service | None = None,
) -> None:
    """Each workload on ours, then (if it has one) at once on the peer. With
    `compare` (split service only), each SCIM one three times more, alternating
    with a second gateway that records no activity (issue #18: its cost, in one
    run). With `against` (a second `wando serve` with another worker count, on
    the same database), each SCIM one three times more, alternating with it."""
    quiet = await _quiet_gateway(service) if compare else None
    try:
        for w in THROUGHPUT:
            if not run.wants(w.name):
                continue
            target = (
                {"grpc": service.grpc_address, "core": True}
                if w.target == "core"
                else {"http": service.scim_base}
            )
            spec = run.throughput_spec(w.job, _params(w, data), **target)
            if w.consistency == "minimize_latency" and w.target == "core":
                # the cache of the replica serving the load's connection holds
                # every user before timing (bench.jobs._pick): a service that
                # has run a while, not one filling its cache from cold
                spec["warmup_jobs"] = len(data.sample) // w.lookups
            await run.measure(w.name, w.title, spec, service)
            if quiet is not None and w.target != "core":
                await _activity_cost(run, service, data, w, quiet)
            if against is not None and w.target != "core":
                await _workers_ratio(run, service, data, w, against)
            if w.peer and peer is not None and peers is not None:
                spec = run.throughput_spec(w.job, _params(w, peers), http=peer.scim_base)
                await run.measure(f"peer:{w.name}", w.title, spec, peer, "peer")
    finally:
        if quiet is not None:
            await quiet[0].stop()


async def _activity_cost(
    run: Run,
    service: Service,
    data: Dataset,
    w: Workload,
    quiet: tuple[processes.Child, str],
) -> None:
    """After the usual (first, coldest) pass: off, on, off, so that what
    drifts meanwhile (caches, the database growing) weighs on both sides."""
    child, base = quiet
    row = run.rows[-1]  # the usual pass's
    core = [c for c in service.children if c.name == "core"]
    off = (base, Processes([*core, child], service.postmaster))
    on = (service.scim_base, service)
    rates = await _alternating(
        run,
        data,
        w,
        [
            (f"{w.name}-activity-{label}-{n}", f"activity {label}", f"{label}{n}", *where)
            for n, (label, where) in enumerate((("off", off), ("on", on), ("off", off)))
        ],
    )
    if rates[0] + rates[2]:
        row["activity_cost"] = round(1 - rates[1] / ((rates[0] + rates[2]) / 2), 3)


async def _workers_ratio(
    run: Run, service: Service, data: Dataset, w: Workload, against: Service
) -> None:
    """After the usual pass: the other worker count, the default, the other
    again; the ratio is the other's mean req/s ÷ the default's second pass."""
    row = run.rows[-1]  # the usual pass's
    other = f"{against.serve_workers} + {against.serve_workers} workers"
    rates = await _alternating(
        run,
        data,
        w,
        [
            (
                f"{w.name}-workers-{n}",
                other if server is against else "default workers",
                f"w{n}",
                server.scim_base,
                server,
            )
            for n, server in enumerate((against, service, against))
        ],
    )
    if rates[1]:
        row["workers_ratio"] = round((rates[0] + rates[2]) / 2 / rates[1], 3)
        row["workers_other"] = against.serve_workers


async def _alternating(
    run: Run,
    data: Dataset,
    w: Workload,
    passes: list[tuple[str, str, str, str, Server]],
) -> list[float]:
    """More passes of `w` after its usual one, each (row name, what the title
    adds, suffix for the users it creates, URL, server); their req/s."""
    rates = []
    for name, label, suffix, url, server in passes:
        measured = await run.measure(
            name,
            f"{w.title} ({label})",
            run.throughput_spec(w.job, _params_again(w, data, suffix), http=url),
            server,
        )
        rates.append(measured["requests_per_second"])
    return rates


def _params_again(w: Workload, data: Dataset, suffix: str) -> dict[str, Any]:
    params = _params(w, data)
    if "run" in params:  # users a pass creates must not collide with another's
        params["run"] += f"-{suffix}"
    return params


async def _quiet_gateway(service: Service) -> tuple[processes.Child, str]:
    port = processes.free_port()
    env = service.gateway_env() | {
        "WANDO_HTTP_LISTEN": f"127.0.0.1:{port}",
        "WANDO_ACTIVITY": "off",
    }
    child = await processes.start(
        "gateway-quiet",
        [processes.WANDO, "gateway"],
        log_dir=service.work,
        env=env,
        ready="gateway listening",
    )
    return child, f"http://127.0.0.1:{port}{SCIM_PREFIX}"


# -- the run --------------------------------------------------------------------


def wants_peer(selected: set[str]) -> bool:
    return any(w.peer and w.name in selected for w in THROUGHPUT) or bool(
        selected & set(PEER_COUNTED)
    )


async def build_data(
    run: Run, service: Service, pool: asyncpg.Pool, peer: Peer | None
) -> tuple[Dataset, Dataset | None]:
    """Ours by SQL and the peer's through its SCIM API, side by side."""
    print(
        f"seeding {run.sizes.users:,} users (ours by SQL; the peer's by SCIM /Bulk) …", flush=True
    )

    async def peers() -> Dataset | None:
        return None if peer is None else await peer_data.build(peer, run.sizes)

    return await asyncio.gather(dataset.build(service, pool, run.sizes), peers())


async def run_service_workloads(
    run: Run, service: Service, pool: asyncpg.Pool, peer: Peer | None
) -> dict[str, str]:
    """Everything on the service and the peer, in the module docstring's
    order; returns the query plans of the user lookups."""
    data, peers = await build_data(run, service, pool, peer)
    run.lap("start the service and the peer, build the data")
    print("workloads:", flush=True)
    if run.wants("import"):
        await run_imports(run, service, data)
        if peer is not None and peers is not None:
            await peer_import(run, peer, peers)
        run.lap("imports")
    await run_throughput(run, service, data, peer, peers, run.compare_activity, run.against)
    run.lap("throughput workloads")
    if run.wants("group-replace"):
        await run_group_replace(run, service, data, pool)
        run.lap("group replace")
    if run.wants("push"):
        ours = await run_push(run, service, data, pool)
        check: dict[str, Any] = {"value": round(ours, 2), "met": None}
        if peer is not None and peers is not None:
            theirs = await peer_push(run, peer, peers)
            ratio = theirs / ours
            check.update(
                peer=round(theirs, 2),
                ours_vs_peer=round(ratio, 2),
                target=f"≥ {targets.VS_PEER:g}x the peer's speed (peer's time ÷ ours)",
                met="peer:push-groups" not in run.peer_failures
                and "peer:push-users" not in run.peer_failures
                and ratio >= targets.VS_PEER,
            )
        run.checks["first push wall time (s)"] = check
        run.lap("first push")
    if run.wants("deactivation"):
        await run_deactivation(run, service, data)
        run.lap("deactivation propagation")
    return await checks.plans(pool, data.main.id, len(data.users) // 2)


async def run_suite(
    sizes: Sizes,
    only: list[str] | None,
    quick: bool,
    mode: str,
    logs: Path,
    serve_workers: int | None = None,
    rate_limit: bool = False,
    activity: str = "on",
    against_workers: int | None = None,
) -> dict[str, Any]:
    """Run the chosen workloads; every process's log is copied into `logs`."""
    selected = set(only or NAMES)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wando-bench-") as tmp:
        work = Path(tmp)
        pg = await embedded.start(work / "pg")
        postmaster = processes.postmaster_pid(work / "pg" / "postgres")
        load = await LoadClient.start(work / "load.log")
        run = Run(sizes, selected, load, started)
        run.compare_activity = activity == "both"
        run.lap("start PostgreSQL and the load process")
        try:
            await run_baselines(run, pg, postmaster, work)
            run.lap("baselines")
            service = Service(
                pg.dsn,
                work,
                postmaster,
                mode,
                serve_workers=serve_workers,
                rate_limit=rate_limit,
                activity=activity != "off",
            )
            peer = Peer(work) if wants_peer(selected) else None
            against = (
                None
                if against_workers is None
                else Service(
                    pg.dsn,
                    work,
                    postmaster,
                    "serve",
                    serve_workers=against_workers,
                    activity=activity != "off",
                    label="-other",
                )
            )
            try:
                await service.start()
                if against is not None:
                    await against.start()
                    run.against = against
                if peer is not None:
                    await peer.start()
                pool = await db.create_pool(pg.dsn, min_size=1, max_size=4)
                try:
                    plans = await run_service_workloads(run, service, pool, peer)
                finally:
                    await pool.close()
            except BaseException:
                others = [*(peer.children if peer else []), *(against.children if against else [])]
                for child in [*service.children, *others]:
                    print(f"--- {child.name} log\n{child.tail()}", flush=True)
                raise
            finally:
                await service.stop()
                if against is not None:
                    await against.stop()
                if peer is not None:
                    await peer.stop()
        finally:
            await load.stop()
            await pg.stop()
            await asyncio.to_thread(keep_logs, work, logs)
    run.lap("stop")
    report.evaluate(run.rows, run.peer_failures)
    return {
        "meta": {
            **report.meta(
                sizes, quick, time.monotonic() - started, run.phase_seconds, mode, peer is not None
            ),
            "workers": serve_workers if mode == "serve" else None,
            "rate_limit": rate_limit,
            "activity": activity,
            "against_workers": against_workers,
        },
        "rows": run.rows,
        "checks": run.checks,
        "plans": plans,
        "failures": run.failures,
        "peer_failures": run.peer_failures,
    }


def keep_logs(work: Path, logs: Path) -> None:
    """Copy every process's log out of the run's temporary directory."""
    logs.mkdir(parents=True, exist_ok=True)
    for log in work.glob("*.log"):
        shutil.copyfile(log, logs / log.name)


def main(
    sizes: Sizes,
    only: list[str] | None,
    quick: bool,
    out: Path,
    mode: str,
    serve_workers: int | None = None,
    rate_limit: bool = False,
    activity: str = "on",
    against_workers: int | None = None,
) -> int:
    results = loop.run(
        run_suite(
            sizes,
            only,
            quick,
            mode,
            out.parent / "logs",
            serve_workers,
            rate_limit,
            activity,
            against_workers,
        )
    )
    report.write(results, out)
    print(report.table(results))
    print(f"\nwritten to {out}")
    if results["failures"]:
        print("\nFAILED (the figures above do not count):", flush=True)
        for failure in results["failures"]:
            print(f"  {failure}")
        return 1
    return 0
