"""One run of the suite: how it hands specs to the load process, samples the
server's memory and CPU meanwhile, and keeps what was measured and what failed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.load import LoadClient
from bench.processes import Child, sampling_rss
from bench.sizes import Sizes


class Server(Protocol):
    """What serves a workload: ours (bench.service), the peer
    (bench.peer_process) or the baselines."""

    @property
    def children(self) -> list[Child]: ...  # their RSS is sampled

    @property
    def cpu_roots(self) -> list[int]: ...  # their trees' CPU is counted


@dataclass
class Processes:
    """A Server that is just some processes (the baselines) and PostgreSQL."""

    processes: list[Child] = field(default_factory=list)
    postmaster: int | None = None

    @property
    def children(self) -> list[Child]:
        return self.processes

    @property
    def cpu_roots(self) -> list[int]:
        pids = [c.pid for c in self.processes]
        return pids if self.postmaster is None else [*pids, self.postmaster]


def cpu_per_request(cpu_s: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request of each process group."""
    if not requests:
        return {}
    return {k: round(v * 1000 / requests, 3) for k, v in cpu_s.items()}


class Run:
    """One run of the suite: what it measured and what failed."""

    def __init__(self, sizes: Sizes, selected: set[str], load: LoadClient, started: float) -> None:
        self.sizes = sizes
        self.selected = selected
        self.load = load
        self.rows: list[dict[str, Any]] = []
        self.checks: dict[str, Any] = {}
        self.failures: list[str] = []
        # requests the peer failed: its figure is left out, the run goes on
        self.peer_failures: dict[str, str] = {}
        self.phase_seconds: dict[str, float] = {}
        # measure each SCIM workload again through a gateway without activity
        self.compare_activity = False
        # a second `wando serve` with another worker count (bench.service.Service)
        self.against: Any = None
        self._clock = started

    def lap(self, phase: str) -> None:
        """Record the wall time since the previous lap as `phase`."""
        now = time.monotonic()
        self.phase_seconds[phase] = round(now - self._clock, 1)
        self._clock = now

    def wants(self, name: str) -> bool:
        return name in self.selected

    async def measure(
        self,
        name: str,
        title: str,
        spec: dict[str, Any],
        server: Server,
        label: str = "ours",
    ) -> dict[str, Any]:
        """Run one load spec while sampling the server's RSS and counting its
        CPU (and the load process's); any failed request is a failure of the
        whole run. `label` says whose row it is: ours, peer or baseline."""
        print(f"  {title}{'' if label == 'ours' else f' ({label})'} …", flush=True)
        spec = {**spec, "cpu": {"server": server.cpu_roots}}
        async with sampling_rss(server.children) as peaks:
            result = await self.load.run(spec)
        row = {"name": name, "title": title, "server": label, **result, "peak_rss_mib": peaks}
        row["cpu_ms_per_request"] = cpu_per_request(result["cpu_s"], result["requests"])
        row.pop("ordered_ms", None)
        self._check(title, result, label, name)
        self.rows.append(row)
        return {**row, "ordered_ms": result.get("ordered_ms", [])}

    async def aside(
        self, title: str, spec: dict[str, Any], label: str = "ours", name: str = ""
    ) -> dict[str, Any]:
        """Run a spec that is no row of its own (a warm-up, a second look);
        its failed requests fail the run all the same (ours) or drop the
        peer's figure for workload `name`."""
        result = await self.load.run(spec)
        self._check(title, result, label, name)
        return result

    def _check(self, title: str, result: dict[str, Any], label: str, name: str) -> None:
        if result["errors"]:
            kinds = ", ".join(f"{k} x{n}" for k, n in result["error_kinds"].items())
            samples = "\n    ".join(result["error_samples"])
            failed = f"{title}: {result['errors']} failed: {kinds}\n    {samples}"
            if label == "peer":
                self.peer_failures[name] = failed
            else:
                self.failures.append(failed)

    def throughput_spec(self, job: str, params: dict[str, Any], **target: Any) -> dict[str, Any]:
        return {
            "job": job,
            "params": params,
            "in_flight": self.sizes.in_flight,
            "seconds": self.sizes.seconds,
            "warmup_seconds": self.sizes.warmup_seconds,
            **target,
        }

    def counted_spec(
        self, job: str, params: dict[str, Any], count: int, in_flight: int, **extra: Any
    ) -> dict[str, Any]:
        return {
            "job": job,
            "params": params,
            "in_flight": in_flight,
            "seconds": self.sizes.cap_seconds,
            "max_jobs": count,
            "warmup_seconds": 0,
            **extra,
        }
