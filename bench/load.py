"""The load generator: a separate process that drives the service, so the
service's own process does only the service's work.

Run as `python -m bench.load`; it reads one JSON spec a line on stdin and
answers each with one JSON result line on stdout:

    spec:   {"job": name (bench.jobs.JOBS), "params": {...},
             "http": base URL or null, "grpc": HOST:PORT or null,
             "core": true if "grpc" is the core (TLS as WANDO_CORE_TLS_* say),
             "in_flight": 16, "seconds": 4, "max_jobs": 1000000,
             "warmup_seconds": 0.5, "warmup_jobs": 0, "first_index": 0,
             "keep_order": false,
             "cpu": {"service": [pid, …], …}}
    result: {"jobs", "requests", "elapsed_s", "requests_per_second",
             "jobs_per_second", "p50_ms", "p99_ms", "max_ms", "errors",
             "error_samples", "complete", "ordered_ms", "cpu_s"}

Each spec runs `in_flight` workers; each takes the next job index and runs
that job, until `max_jobs` jobs were run or `seconds` passed (whichever comes
first), numbering jobs from `first_index`. A warm-up of `warmup_seconds`,
and of at least `warmup_jobs` jobs, runs first and is not recorded (it takes
the first numbers: a job may walk its data in order there, to warm a cache). Only
127.0.0.1 is ever targeted (the suite starts everything there).

`cpu_s` is the CPU time (user + system) spent during the recorded phase
alone, warm-up excluded: by each named group of process trees in `cpu`
(bench.processes.tree_cpu_seconds, read here, at the phase's edges) and by
this load process itself ("load").
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench import loop
from bench.context import Context
from bench.jobs import JOBS
from bench.processes import PYTHON, ROOT, tree_cpu_seconds
from bench.service import core_tls
from common import channels

LOOPBACK = "127.0.0.1"


def _cpu_now(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each group of process trees, and of this process."""
    own = os.times()
    return {
        **{name: tree_cpu_seconds(pids) for name, pids in groups.items()},
        "load": own.user + own.system,
    }


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


async def _phase(
    ctx: Context, first: int, seconds: float, max_jobs: int, in_flight: int
) -> tuple[int, float, int]:
    """Run jobs first, first+1, … ; returns (jobs run, elapsed s, next index)."""
    job = JOBS[ctx.job]
    next_index, end = first, first + max_jobs
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal next_index
        while next_index < end and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            try:
                await job(ctx, index)
            except Exception as exc:  # a broken job must show, not stop the run
                ctx.error(f"job raised {type(exc).__name__}", repr(exc)[:300])

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return next_index - first, time.perf_counter() - started, next_index


async def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    http, grpc_address = spec.get("http"), spec.get("grpc")
    if (http and urlsplit(http).hostname != LOOPBACK) or (
        grpc_address and not grpc_address.startswith(f"{LOOPBACK}:")
    ):
        raise ValueError(f"refusing to load anything but {LOOPBACK}: {http or grpc_address}")
    in_flight = int(spec.get("in_flight", 16))
    connector = aiohttp.TCPConnector(limit=in_flight, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    # the core as the environment's WANDO_CORE_TLS_* say; the bare baseline in plaintext
    tls_files = core_tls() if spec.get("core") else None
    channel = channels.aio_channel(spec["grpc"], tls_files) if spec.get("grpc") else None
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        ctx = Context(
            job=spec["job"],
            params=spec.get("params", {}),
            session=session,
            base=spec.get("http") or "",
            channel=channel,
            rng=random.Random(7),
        )
        try:
            next_index = int(spec.get("first_index", 0))
            warmup_jobs = int(spec.get("warmup_jobs", 0))
            if warmup_jobs > 0:
                ctx.recording = False
                _, _, next_index = await _phase(ctx, next_index, 3600.0, warmup_jobs, in_flight)
                ctx.recording = True
            if spec.get("warmup_seconds", 0) > 0:
                ctx.recording = False
                _, _, next_index = await _phase(
                    ctx, next_index, float(spec["warmup_seconds"]), 10**9, in_flight
                )
                ctx.recording = True
            max_jobs = int(spec.get("max_jobs", 10**9))
            groups = spec.get("cpu") or {}
            cpu_before = _cpu_now(groups)
            jobs, elapsed, _ = await _phase(
                ctx, next_index, float(spec["seconds"]), max_jobs, in_flight
            )
            cpu_after = _cpu_now(groups)
        finally:
            if channel is not None:
                await channel.close()
    latencies = sorted(ms for _, ms in ctx.latencies)
    result: dict[str, Any] = {
        "jobs": jobs,
        "requests": len(latencies),
        "elapsed_s": round(elapsed, 3),
        "requests_per_second": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "jobs_per_second": round(jobs / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(statistics.median(latencies), 2) if latencies else 0.0,
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 2) if latencies else 0.0,
        "errors": sum(ctx.errors.values()),
        "error_kinds": dict(ctx.errors),
        "error_samples": ctx.samples,
        "complete": jobs == max_jobs,
        "cpu_s": {k: round(cpu_after[k] - cpu_before[k], 3) for k in cpu_after},
    }
    if spec.get("keep_order"):
        result["ordered_ms"] = [round(ms, 2) for _, ms in sorted(ctx.latencies)]
    return result


class LoadClient:
    """The suite's end of the protocol: one load process for the whole run."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    @classmethod
    async def start(cls, log: Path) -> LoadClient:
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                PYTHON,
                "-m",
                "bench.load",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                limit=64 * 1024 * 1024,  # a result line may carry every page's latency
            )
        return cls(proc)

    async def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(spec).encode() + b"\n")
        await self._proc.stdin.drain()
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the load process exited (see its log)")
        result: dict[str, Any] = json.loads(line)
        if "failed" in result:
            raise RuntimeError(f"load process: {result['failed']}")
        return result

    async def stop(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()


async def main() -> None:
    """Answer specs from stdin until it closes."""
    reader = asyncio.get_running_loop()
    while True:
        line = await reader.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        spec = json.loads(line)
        try:
            result = await run_spec(spec)
        except Exception as exc:
            result = {"failed": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    loop.run(main())
