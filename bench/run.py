"""One run of the suite: how it hands specs to the load process, samples the
service's memory meanwhile, and keeps what was measured and what failed."""

from __future__ import annotations

import time
from typing import Any

from bench.load import LoadClient
from bench.processes import Child, sampling_rss
from bench.sizes import Sizes


class Run:
    """One run of the suite: what it measured and what failed."""

    def __init__(self, sizes: Sizes, selected: set[str], load: LoadClient, started: float) -> None:
        self.sizes = sizes
        self.selected = selected
        self.load = load
        self.rows: list[dict[str, Any]] = []
        self.checks: dict[str, Any] = {}
        self.failures: list[str] = []
        self.phase_seconds: dict[str, float] = {}
        # measure each SCIM workload again through a gateway without activity
        self.compare_activity = False
        self._clock = started

    def lap(self, phase: str) -> None:
        """Record the wall time since the previous lap as `phase`."""
        now = time.monotonic()
        self.phase_seconds[phase] = round(now - self._clock, 1)
        self._clock = now

    def wants(self, name: str) -> bool:
        return name in self.selected

    async def measure(
        self, name: str, title: str, spec: dict[str, Any], children: list[Child]
    ) -> dict[str, Any]:
        """Run one load spec while sampling the children's RSS; any failed
        request is a failure of the whole run."""
        print(f"  {title} …", flush=True)
        async with sampling_rss(children) as peaks:
            result = await self.load.run(spec)
        row = {"name": name, "title": title, **result, "peak_rss_mib": peaks}
        row.pop("ordered_ms", None)
        self._check(title, result)
        self.rows.append(row)
        return {**row, "ordered_ms": result.get("ordered_ms", [])}

    async def aside(self, title: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Run a spec that is no row of its own (a warm-up, a second look);
        its failed requests fail the run all the same."""
        result = await self.load.run(spec)
        self._check(title, result)
        return result

    def _check(self, title: str, result: dict[str, Any]) -> None:
        if result["errors"]:
            kinds = ", ".join(f"{k} x{n}" for k, n in result["error_kinds"].items())
            samples = "\n    ".join(result["error_samples"])
            self.failures.append(f"{title}: {result['errors']} failed: {kinds}\n    {samples}")

    def throughput_spec(self, job: str, params: dict[str, Any], **target: str) -> dict[str, Any]:
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
