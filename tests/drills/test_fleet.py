"""Issue #15, part 3: a fleet of 2 gateways and 2 cores, killed and rolled under load.

Real `wando core` and `wando gateway` subprocesses, two of each, on one external
PostgreSQL (an embedded server of the drill's own, reached by DSN). Each
gateway's WANDO_CORE lists both cores (round robin, retries on safe reads).
Okta-style writes reach the gateways through a modelled balancer: round robin
per request over the gateways whose /readyz last answered 200 (probed every
quarter second); a connection refused (nothing was sent) is tried on the next
gateway, as a balancer's "next upstream" does. Under that load, in sequence:

- one core is SIGKILLed, and started again a second later;
- a rolling deploy: each gateway, then each core, gets SIGTERM, exits, is
  started again and is ready before the next one's turn;
- every database session is ended once (pg_terminate_backend).

Asserted: no acknowledged write is lost or half applied; clients see only
2xx or 503 with Retry-After, apart from requests already sent on a kept-alive
connection to a gateway that was draining at that moment (counted apart and
reported: the gateway closes idle connections when it drains, and a request
crossing that close gets no answer; nothing it carried was acknowledged);
and a WatchRoleChanges client on the service credential, cut whenever its
core dies or restarts, resumes on the other core from the last sequence it
saw: it receives every change of the role_changes table exactly once, in
order, 1..N without a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest

from gateway.corechannel import CHANNEL_OPTIONS
from tests.drills.faults_support import (
    RECOVERY_BOUND_SECONDS,
    Answer,
    DrillPostgres,
    OktaLoad,
    WandoProcess,
    check_writes,
    drill_postgres,
    load_running,
    new_org,
    service_env,
    until_write_succeeds,
)
from tests.drills.report import heavy, report
from tests.gateway.support import PREFIX
from tests.support import SERVICE, free_port
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import role_service_pb2_grpc

DEADLINE_SECONDS = 3.0
GRACE_SECONDS = 5
PROBE_SECONDS = 0.25
CORE_READY = "core gRPC listening"
GATEWAY_READY = "gateway listening"
# A deploy waits this long after a new core is ready before it stops the next
# one (Kubernetes' minReadySeconds): the gateways reconnect to a core that was
# down within their longest reconnect backoff, and until then they send its
# share of calls to the other core, which must not be the next one stopped.
CORE_SETTLE_SECONDS = dict(CHANNEL_OPTIONS)["grpc.max_reconnect_backoff_ms"] / 1000
DRAINED = "drained "  # the note of an answer lost on a draining gateway's connection

SELECT_SEQUENCES = """
SELECT seq FROM role_changes
WHERE org_id = (SELECT org_id FROM organizations WHERE slug = $1)
ORDER BY seq
"""


@pytest.fixture(scope="module")
async def drill_pg() -> AsyncIterator[DrillPostgres]:
    async with drill_postgres("fleet") as pg:
        yield pg


class Fleet:
    """Two cores and two gateways: their addresses, settings and processes."""

    def __init__(self, dsn: str) -> None:
        self.cores = [f"127.0.0.1:{free_port()}" for _ in range(2)]
        self.gateways = [f"127.0.0.1:{free_port()}" for _ in range(2)]
        self.common = {
            "WANDO_LOG_LEVEL": "info",  # the processes announce readiness at info
            "WANDO_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
            "WANDO_CORE_TIMEOUT_SECONDS": str(DEADLINE_SECONDS),
        }
        self.dsn = dsn
        self.processes: dict[str, WandoProcess] = {}
        self.started: list[tuple[str, WandoProcess]] = []

    async def start(self, name: str) -> WandoProcess:
        """Start `core0`, `core1`, `gateway0` or `gateway1` and wait until it serves."""
        kind, index = name[:-1], int(name[-1])
        if kind == "core":
            env = service_env(
                WANDO_DATABASE_URL=self.dsn,
                WANDO_GRPC_LISTEN=self.cores[index],
                WANDO_HTTP_LISTEN=self.gateways[index],  # unused by a core
                **self.common,
            )
            ready = CORE_READY
        else:
            env = service_env(
                WANDO_CORE=",".join(self.cores),
                WANDO_HTTP_LISTEN=self.gateways[index],
                **self.common,
            )
            ready = GATEWAY_READY
        process = await WandoProcess.start(kind, env=env, ready=ready)
        self.processes[name] = process
        self.started.append((name, process))
        return process

    def errors(self) -> list[str]:
        """Log lines at error level or above, of every process the drill started."""
        return [
            f"{name}: {line}"
            for name, process in self.started
            for line in process.lines
            if " ERROR " in line or "Traceback" in line or " CRITICAL " in line
        ]

    async def stop_all(self) -> dict[str, int]:
        """SIGTERM whatever still runs, gateways first; the exit codes."""
        codes = {}
        for name in sorted(self.processes, key=lambda n: not n.startswith("gateway")):
            process = self.processes[name]
            if process.proc.returncode is None:
                codes[name] = await process.terminate()
        return codes


# ---------------------------------------------------------------- balancer


class Balancer:
    """What a load balancer in front of the gateways knows: which ones are in
    rotation (the last /readyz probe answered 200), and which one the drill
    is draining right now."""

    def __init__(self, session: aiohttp.ClientSession, gateways: list[str]) -> None:
        self.session = session
        self.gateways = gateways
        self.in_rotation = set(gateways)
        self.draining: set[str] = set()
        self.taken_out = 0  # probes that found a gateway not ready
        self._turn = itertools.count()

    def order(self) -> list[str]:
        """The gateways to try for one request: round robin over those in
        rotation; then the others (a balancer with no healthy upstream still
        tries one rather than answer nothing)."""
        ready = [g for g in self.gateways if g in self.in_rotation]
        first = next(self._turn)
        ready = ready[first % len(ready) :] + ready[: first % len(ready)] if ready else []
        return ready + [g for g in self.gateways if g not in ready]

    async def probe(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for gateway in self.gateways:
                ready = await self._ready(gateway)
                if ready:
                    self.in_rotation.add(gateway)
                elif gateway in self.in_rotation:
                    self.in_rotation.discard(gateway)
                    self.taken_out += 1
            await asyncio.sleep(PROBE_SECONDS)

    async def _ready(self, gateway: str) -> bool:
        try:
            async with self.session.get(
                f"http://{gateway}/readyz", timeout=aiohttp.ClientTimeout(total=1)
            ) as reply:
                return reply.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def until_in_rotation(self, gateway: str, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while gateway not in self.in_rotation:  # noqa: ASYNC110 - polled by the probe
                await asyncio.sleep(0.05)


class BalancedLoad(OktaLoad):
    """The Okta load, each request sent through the Balancer."""

    def __init__(self, session: aiohttp.ClientSession, balancer: Balancer, token: str) -> None:
        super().__init__(
            session, "http://unused", token, workers=10, deadline_seconds=DEADLINE_SECONDS
        )
        self.balancer = balancer
        self.rerouted = 0  # connections refused, so sent to the next gateway
        self.reasons: Counter[str] = Counter()  # the detail of each 503

    async def send(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        started = time.monotonic()
        status, note, parsed = 0, "no gateway", None
        for gateway in self.balancer.order():
            try:
                async with self.session.request(
                    method,
                    f"http://{gateway}{PREFIX}{path}",
                    json=body,
                    headers=self.headers,
                    timeout=aiohttp.ClientTimeout(total=self.client_timeout),
                ) as reply:
                    status, note = reply.status, ""
                    parsed = _json(await reply.text())
                    if status >= 500 and not reply.headers.get("Retry-After"):
                        note = "no Retry-After"
                    if status >= 500 and isinstance(parsed, dict):
                        self.reasons[f"{status} {method} {parsed.get('detail')}"] += 1
            except aiohttp.ClientConnectorError:
                self.balancer.in_rotation.discard(gateway)  # nothing was sent: try the next
                self.rerouted += 1
                continue
            except TimeoutError:
                note = "hang"
            except aiohttp.ClientError as exc:
                note = type(exc).__name__
                if gateway in self.balancer.draining:
                    note = DRAINED + note
            break
        self.answers.append(Answer(started, time.monotonic() - started, status, note))
        return status, parsed

    def drained(self) -> list[Answer]:
        return [a for a in self.answers if a.note.startswith(DRAINED)]

    def unacceptable(self) -> list[Answer]:
        return [a for a in self.bad_answers() if not a.note.startswith(DRAINED)]


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


# ---------------------------------------------------------------- watcher


class Watcher:
    """A WatchRoleChanges client on the service credential: it watches
    through one core; when the stream is cut it resumes on the other core
    from the last sequence it saw."""

    def __init__(self, cores: list[str], organization: str) -> None:
        self.cores = cores
        self.organization = organization
        self.sequences: list[int] = []
        self.checkpoints = 0
        self.connections: list[str] = []
        self.cuts: list[str] = []  # the status of each stream that ended

    @property
    def last(self) -> int:
        return self.sequences[-1] if self.sequences else 0

    async def run(self) -> None:
        for index in itertools.count():
            address = self.cores[index % len(self.cores)]
            async with grpc.aio.insecure_channel(address) as channel:
                stub = role_service_pb2_grpc.RoleServiceStub(channel)
                call = stub.WatchRoleChanges(
                    rpb.WatchRoleChangesRequest(
                        organization=self.organization, after_sequence=self.last
                    ),
                    metadata=SERVICE,
                )
                self.connections.append(address)
                try:
                    async for message in call:
                        if message.HasField("change"):
                            self.sequences.append(message.change.sequence)
                        else:  # an idle checkpoint: no change
                            self.checkpoints += 1
                    self.cuts.append("end of stream")
                except grpc.aio.AioRpcError as exc:
                    self.cuts.append(exc.code().name)
            await asyncio.sleep(0.1)  # then the other core

    def resumed(self) -> int:
        """Streams that were cut after at least one change and resumed."""
        return max(0, len(self.connections) - 1)


@contextlib.asynccontextmanager
async def watching(watcher: Watcher) -> AsyncIterator[None]:
    task = asyncio.create_task(watcher.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def caught_up(watcher: Watcher, dsn: str, organization: str) -> list[int]:
    """The role_changes sequences of `organization`, once the watcher has seen the last."""
    conn = await asyncpg.connect(dsn)
    try:
        sequences = [row["seq"] for row in await conn.fetch(SELECT_SEQUENCES, organization)]
    finally:
        await conn.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            while sequences and watcher.last < sequences[-1]:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    return sequences


# ---------------------------------------------------------------- the drill


class Phases:
    """Per fault: its answers, 503s, and seconds to the first 2xx sent after it began."""

    def __init__(self, load: BalancedLoad) -> None:
        self.load = load
        self.figures: dict[str, dict[str, Any]] = {}

    @contextlib.asynccontextmanager
    async def fault(self, name: str) -> AsyncIterator[None]:
        seen, began = len(self.load.answers), time.monotonic()
        yield
        recovery = await until_write_succeeds(self.load, began, RECOVERY_BOUND_SECONDS)
        during = self.load.answers[seen:]
        self.figures[name] = {
            "answers": len(during),
            "503": sum(1 for a in during if a.status == 503),
            "drained_connection_errors": sum(1 for a in during if a.note.startswith(DRAINED)),
            "seconds": round(time.monotonic() - began, 1),
            "recovery_seconds": recovery,
        }


async def more_answers(load: OktaLoad, more: int, timeout: float = 60) -> None:
    target = len(load.answers) + more
    async with asyncio.timeout(timeout):
        while len(load.answers) < target:  # noqa: ASYNC110 - the load has no event to await
            await asyncio.sleep(0.05)


async def roll(fleet: Fleet, balancer: Balancer, name: str) -> tuple[int, float]:
    """SIGTERM `name`, wait for its exit, start it again, wait until it is
    ready (a gateway: back in the balancer's rotation); its exit code and
    the seconds it took to drain and exit."""
    process = fleet.processes[name]
    gateway = fleet.gateways[int(name[-1])] if name.startswith("gateway") else None
    if gateway:
        balancer.draining.add(gateway)
    began = time.monotonic()
    code = await process.terminate(GRACE_SECONDS + 30)
    drained = round(time.monotonic() - began, 2)
    await fleet.start(name)
    if gateway:
        balancer.draining.discard(gateway)
        await balancer.until_in_rotation(gateway)
    else:
        await asyncio.sleep(CORE_SETTLE_SECONDS)
    return code, drained


async def test_fleet_killed_rolled_and_cut_off_loses_nothing(drill_pg: DrillPostgres) -> None:
    database = f"fleet_{uuid.uuid4().hex[:8]}"
    dsn = await drill_pg.create_database(database)
    fleet = Fleet(dsn)
    rounds = 3 if heavy() else 1
    steady = 300 if heavy() else 80  # answers between faults
    exit_codes: list[tuple[str, int]] = []
    ended: list[int] = []  # database sessions ended, per round
    drain_seconds: dict[str, float] = {}  # from SIGTERM to exit, per rolled process

    async def faults(load: BalancedLoad, balancer: Balancer, phases: Phases) -> None:
        await more_answers(load, steady)
        for round_ in range(1, rounds + 1):
            async with phases.fault(f"sigkill_core0_r{round_}"):
                fleet.processes["core0"].kill()
                await fleet.processes["core0"].wait()
                await asyncio.sleep(1.0)
                await fleet.start("core0")
                await asyncio.sleep(CORE_SETTLE_SECONDS)
            await more_answers(load, steady)
            for name in ("gateway0", "gateway1", "core0", "core1"):
                async with phases.fault(f"roll_{name}_r{round_}"):
                    code, seconds = await roll(fleet, balancer, name)
                    exit_codes.append((name, code))
                    drain_seconds[f"{name}_r{round_}"] = seconds
                await more_answers(load, steady // 2)
            async with phases.fault(f"terminate_sessions_r{round_}"):
                ended.append(await drill_pg.terminate_backends(database))
            await more_answers(load, steady)

    try:
        for name in ("core0", "core1", "gateway0", "gateway1"):  # cores one at a time: migrations
            await fleet.start(name)
        secret = await new_org(fleet.cores[0], "initech")
        watcher = Watcher(fleet.cores, "initech")
        async with aiohttp.ClientSession() as session:
            balancer = Balancer(session, fleet.gateways)
            load = BalancedLoad(session, balancer, secret)
            phases = Phases(load)
            probing = asyncio.Event()
            probe = asyncio.create_task(balancer.probe(probing))
            try:
                async with watching(watcher):
                    async with load_running(load):
                        await faults(load, balancer, phases)
                    sequences = await caught_up(watcher, dsn, "initech")
            finally:
                probing.set()
                await probe
    finally:
        final_codes = await fleet.stop_all()
    check = await check_writes(dsn, load.acked)
    unacceptable = load.unacceptable()
    drained = load.drained()
    report(
        "fleet.kill_roll_terminate",
        **load.figures(),
        **check.figures(),
        rounds=rounds,
        sessions_ended=ended,
        drain_seconds=drain_seconds,
        reasons_for_503=dict(load.reasons),
        rerouted_connections_refused=load.rerouted,
        drained_connection_errors=len(drained),
        taken_out_of_rotation=balancer.taken_out,
        faults=phases.figures,
        role_changes=len(sequences),
        watch_connections=len(watcher.connections),
        watch_cuts=watcher.cuts,
        watch_checkpoints_skipped=watcher.checkpoints,
    )
    assert check.lost == 0, check
    assert not check.torn, check.torn
    assert not unacceptable, (
        f"{len(unacceptable)} answers no client may see: {unacceptable[:5]}",
        fleet.errors()[:20],
    )
    assert all(code == 0 for _, code in exit_codes), exit_codes
    assert all(code == 0 for code in final_codes.values()), final_codes
    for name, figures in phases.figures.items():
        if "recovery_seconds" in figures:
            assert figures["recovery_seconds"] is not None, (name, phases.figures)
    assert load.acked.users, "no write was acknowledged"
    # every change exactly once, in order, across every cut
    assert sequences == list(range(1, len(sequences) + 1)), "role_changes has a gap"
    assert len(sequences) >= len(load.acked.users)  # a change for each user created
    assert watcher.sequences == sequences, (len(watcher.sequences), len(sequences))
    assert len(set(watcher.connections)) == 2, watcher.connections  # it did move core
    # cut by a dead core or one shutting down (which ends its streams at once),
    # never because it fell behind or was cancelled
    assert set(watcher.cuts) == {"UNAVAILABLE"}, watcher.cuts
