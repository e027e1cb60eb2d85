"""Child processes of the benchmark: started with their output in a log file,
ready once a line appears there, stopped with SIGTERM; their memory, read
from /proc (Linux); and the CPU time of process trees."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]

PYTHON = sys.executable
WANDO = str(Path(sys.executable).parent / "wando")
ROOT = Path(__file__).resolve().parent.parent


class ProcessFailed(Exception):
    """A child process exited early or did not become ready."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log: Path
    peak_rss_kib: int = field(default=0)  # largest VmRSS sampled so far

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, timeout: float = 30) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start(
    name: str,
    argv: list[str],
    *,
    log_dir: Path,
    env: dict[str, str],
    ready: str,
    log_name: str | None = None,
) -> Child:
    """Run argv with stdout and stderr into <log_dir>/<log_name or name>.log
    until `ready` appears in that log (60 s at most)."""
    log = log_dir / f"{log_name or name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=ROOT,
        )
    child = Child(name, proc, log)
    deadline = time.monotonic() + 60
    while ready not in log.read_text(errors="replace"):
        if proc.returncode is not None or time.monotonic() > deadline:
            await child.stop()
            raise ProcessFailed(f"{name} did not start:\n{child.tail()}")
        await asyncio.sleep(0.05)
    return child


def postmaster_pid(pgdata: Path) -> int:
    """The pid of the PostgreSQL server running on `pgdata` (its postmaster.pid)."""
    return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])


def tree_cpu_seconds(roots: list[int]) -> float:
    """User + system CPU seconds of the processes `roots` and all their
    descendants, including descendants that already exited and were waited
    for inside the tree (a PostgreSQL backend that closed, a restarted worker):
    each live process counts its own time plus its reaped children's. So the
    difference of two readings is the CPU the tree used in between."""
    total = 0.0
    for root in roots:
        try:
            process = psutil.Process(root)
            tree = [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def tree_rss_kib(pid: int) -> int:
    """VmRSS of a process and its descendants (a supervisor and its workers)."""
    try:
        process = psutil.Process(pid)
        tree = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss // 1024
    return int(total)


def tree_hwm_kib(pid: int) -> int:
    """VmHWM (peak RSS since start) summed over a process and its descendants."""
    try:
        pids = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return 0
    return sum(memory_kib(p).get("VmHWM", 0) for p in pids)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak since start) of a process, in KiB."""
    out = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


@contextlib.asynccontextmanager
async def sampling_rss(
    children: list[Child], every: float = 0.1
) -> AsyncIterator[dict[str, float]]:
    """Sample each child's VmRSS (with its descendants') while the block runs;
    returns the peak per child name (MiB) into the yielded dict when the
    block ends."""
    for child in children:
        child.peak_rss_kib = 0
    peaks: dict[str, float] = {}

    async def sample() -> None:
        while True:
            for child in children:
                child.peak_rss_kib = max(child.peak_rss_kib, tree_rss_kib(child.pid))
            await asyncio.sleep(every)

    task = asyncio.create_task(sample())
    try:
        yield peaks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for child in children:
            rss = tree_rss_kib(child.pid)
            peaks[child.name] = round(max(child.peak_rss_kib, rss) / 1024, 1)
