"""What a job sees: its parameters and clients, and a recorder that times
each request and records any unexpected status (or content) as an error."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc

# shared/reference/idp-scim-traffic.md §1.1
OKTA_HEADERS = {
    "Accept": "application/scim+json",
    "Accept-Charset": "utf-8",
    "User-Agent": "Okta SCIM Client 1.0.0",
}
MAX_SAMPLES = 5


@dataclass
class Context:
    """One load run: its parameters, clients, and what it recorded."""

    job: str
    params: dict[str, Any]
    session: aiohttp.ClientSession
    base: str
    channel: grpc.aio.Channel | None
    rng: random.Random
    recording: bool = True
    latencies: list[tuple[int, float]] = field(default_factory=list)  # (job index, ms)
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    stubs: dict[str, Any] = field(default_factory=dict)
    # what a job hands from one index to the next (a cursor walk's next cursor)
    state: dict[str, Any] = field(default_factory=dict)

    def error(self, kind: str, sample: str) -> None:
        if not self.recording:
            kind = f"(warm-up) {kind}"
        self.errors[kind] += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(f"{kind}: {sample}")

    def _record(self, index: int, started: float, timed: bool) -> None:
        if self.recording and timed:
            self.latencies.append((index, (time.perf_counter() - started) * 1000))

    def record_ms(self, index: int, ms: float) -> None:
        """A latency the job measured itself (e.g. a propagation delay)."""
        if self.recording:
            self.latencies.append((index, ms))

    async def http(
        self,
        index: int,
        label: str,
        method: str,
        path: str,
        body: Any = None,
        expect: Collection[int] = (200,),
        timed: bool = True,
    ) -> Any:
        """One HTTP request; returns the parsed JSON body (None if empty or
        unexpected). `label` names the request in error reports; `timed`
        False: its latency is not recorded (a job that times something
        else). A flag per request, not per context: the context is shared
        by every concurrent job of the run."""
        headers = dict(OKTA_HEADERS)
        token = self.params.get("token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/scim+json; charset=utf-8"
        started = time.perf_counter()
        try:
            async with self.session.request(
                method, self.base + path, data=data, headers=headers
            ) as reply:
                text = await reply.read()
                status = reply.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._record(index, started, timed)
            self.error(f"{label} -> {type(exc).__name__}", str(exc)[:300])
            return None
        self._record(index, started, timed)
        if status not in expect:
            self.error(f"{label} -> {status}", text[:300].decode(errors="replace"))
            return None
        return json.loads(text) if text else None

    async def rpc(self, index: int, label: str, call: Awaitable[Any], timed: bool = True) -> Any:
        """One gRPC call; returns the response (None on a failed call)."""
        started = time.perf_counter()
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            self._record(index, started, timed)
            self.error(f"{label} -> {exc.code().name}", str(exc.details())[:300])
            return None
        self._record(index, started, timed)
        return response

    def check(self, ok: bool, label: str, sample: str) -> None:
        """A reply that came back with the right status but the wrong content."""
        if self.recording and not ok:
            self.error(label, sample)

    def stub(self, name: str, make: Callable[[grpc.aio.Channel], Any]) -> Any:
        if name not in self.stubs:
            assert self.channel is not None, "this job needs a gRPC target"
            self.stubs[name] = make(self.channel)
        return self.stubs[name]
