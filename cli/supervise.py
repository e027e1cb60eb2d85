"""`wando serve`: a small supervisor that runs the service on every CPU.

It starts the embedded PostgreSQL once (or uses WANDO_DATABASE_URL), applies
the migrations once, then runs N core and N gateway worker processes
(`--workers` / WANDO_WORKERS, default the number of CPUs): `wando core
--supervised core-1` and `wando gateway --supervised gateway-1`, and so on; each
names itself on every line it logs. Each worker has its own event
loop and its own asyncpg pool of WANDO_DB_POOL_MAX.

By default (WANDO_SERVE_GATEWAY_CORE=local) the gateways get WANDO_CORE=local:
each hosts the core's SCIM services itself (core.local) and calls them without
the gRPC hop, the largest cost of a SCIM request on one machine (issue #16).
The core workers serve the gRPC API (admin, roles, Wando's other services).

Why N of each: with the local core the gateway workers do a SCIM request's
work, and Wando's other services call the cores alone; with one of each per
CPU, whichever tier is busy has a process on every CPU, and the kernel shares
the CPUs between them (on 2 CPUs, 1 + 1 served 5-13 % fewer SCIM reads than
2 + 2: bench/RESULTS.md, `--against-workers`).

Workers of a tier share its port (SO_REUSEPORT), so the kernel spreads new
connections over them. The supervisor binds each port first (without
listening: it takes no connection), so a port already in use stops start-up,
port 0 becomes a fixed port every worker binds, and a worker that died is
replaced on the same port. With WANDO_SERVE_GATEWAY_CORE=grpc, gateways reach
the cores on that shared port over loopback; the cores close connections after about 30 s
(core.server.MAX_CONNECTION_AGE_MS), so the gateways' connections spread over
every core.

The supervisor:
- starts the cores first and the gateways once the cores serve;
- restarts a worker that dies, after a backoff (0.5 s doubling to 10 s; back to
  0.5 s once a worker has served for 30 s), logging how it ended;
- gives up (stops everything, exits 1) when a worker exits
  START_FAILURES_TO_GIVE_UP times in a row before it could serve;
- on SIGTERM or SIGINT, stops the gateways (they drain their requests, which
  still need the cores), then the cores, then PostgreSQL;
- serves the workers' metrics, added up, on WANDO_METRICS_LISTEN.
The admin, service and gateway credentials and the cursor key are created in the data
directory before any worker starts, so every worker reads the same ones. With
WANDO_GRPC_TLS_* the cores serve TLS, and the gateways reach them over TLS
(WANDO_CORE_TLS_*, checked here before anything starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from prometheus_client import multiprocess

from cli.worker import READY
from common import channels, config, tls
from core import auth, db
from core.metrics import serve_metrics
from core.server import postgres, stop_signals

log = logging.getLogger("wando.supervisor")

CORE, GATEWAY = "core", "gateway"
START_FAILURES_TO_GIVE_UP = 5
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 10.0
HEALTHY_AFTER_SECONDS = 30.0
# beyond the drain grace, how long a worker may take to exit before SIGKILL
EXIT_MARGIN_SECONDS = 10.0


class GaveUpError(Exception):
    """A worker kept exiting before it could serve."""


@dataclasses.dataclass
class Slot:
    """One worker position; its process is replaced when it dies."""

    kind: str
    index: int
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    start_failures: int = 0
    crashes: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind} worker {self.index}"


def reserve(listen: config.HostPort) -> tuple[socket.socket, config.HostPort]:
    """Bind `listen` without listening, sharing the port with the workers
    (SO_REUSEPORT); returns the socket and the address with its real port.
    Fails (OSError) if another process listens there."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    if listen.port:
        # a bind without SO_REUSEPORT fails if anyone listens on the port
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((listen.host, listen.port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((listen.host, listen.port))
    except OSError:
        sock.close()
        raise
    return sock, config.HostPort(listen.host, sock.getsockname()[1])


def loopback(listen: config.HostPort) -> str:
    """How a worker on this machine reaches a server listening on `listen`."""
    if listen.host in ("0.0.0.0", "", "localhost"):  # noqa: S104 - not binding, mapping
        return f"127.0.0.1:{listen.port}"
    if listen.host == "::":
        return f"[::1]:{listen.port}"
    return str(listen)


class Supervisor:
    def __init__(
        self, envs: dict[str, dict[str, str]], metrics_dir: Path, workers: int, grace: float
    ) -> None:
        self.envs = envs  # by kind of worker
        self.metrics_dir = metrics_dir
        self.grace = grace
        self.slots = {kind: [Slot(kind, i + 1) for i in range(workers)] for kind in (CORE, GATEWAY)}
        self.stopping: set[str] = set()
        self.gave_up = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, kind: str) -> None:
        for slot in self.slots[kind]:
            self._tasks.append(asyncio.create_task(self._keep_running(slot)))

    async def until_ready(self, kind: str, stop: asyncio.Event) -> bool:
        """Until every worker of `kind` serves (True), or a stop or giving up (False)."""
        waits = [asyncio.ensure_future(s.ready.wait()) for s in self.slots[kind]]
        others = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.gave_up.wait())]
        try:
            while not all(w.done() for w in waits):
                pending = [w for w in waits if not w.done()]
                await asyncio.wait([*pending, *others], return_when=asyncio.FIRST_COMPLETED)
                if any(o.done() for o in others):
                    return False
            return True
        finally:
            for task in (*waits, *others):
                task.cancel()

    async def _spawn(self, slot: Slot) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            slot.kind,
            "--supervised",
            f"{slot.kind}-{slot.index}",  # named on each line it logs
            stdin=asyncio.subprocess.PIPE,  # held open: its end tells the worker we died
            stdout=asyncio.subprocess.PIPE,  # the worker's "ready"
            env=self.envs[slot.kind],
        )
        slot.proc = proc
        log.info("%s started (pid %s)", slot.name, proc.pid)
        return proc

    async def _keep_running(self, slot: Slot) -> None:
        while slot.kind not in self.stopping:
            try:
                ready, how, served = await self._run_once(slot)
            except OSError as exc:  # no process at all (out of file descriptors, memory)
                ready, how, served = False, f"could not be started ({exc})", 0.0
            if slot.kind in self.stopping:
                return
            if not ready:
                slot.start_failures += 1
                if slot.start_failures >= START_FAILURES_TO_GIVE_UP:
                    log.error(
                        "%s %s before it could serve, %s times in a row; giving up",
                        slot.name,
                        how,
                        slot.start_failures,
                    )
                    self.gave_up.set()
                    return
            elif served > HEALTHY_AFTER_SECONDS:
                slot.crashes = 0
            delay = min(BACKOFF_FIRST_SECONDS * 2**slot.crashes, BACKOFF_MAX_SECONDS)
            slot.crashes += 1
            log.warning("%s %s; restarting it in %.1fs", slot.name, how, delay)
            await asyncio.sleep(delay)

    async def _run_once(self, slot: Slot) -> tuple[bool, str, float]:
        """Run the slot's process until it exits: whether it came to serve, how
        it ended ("(pid 42) was killed by SIGKILL"), and for how many seconds it served."""
        proc = await self._spawn(slot)
        if slot.kind in self.stopping:  # stop() came while it was being started
            proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        ready = (await proc.stdout.readline()).decode().strip() == READY
        started = time.monotonic()
        if ready:
            slot.start_failures = 0
            slot.ready.set()
        code = await proc.wait()
        multiprocess.mark_process_dead(proc.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
        return ready, f"(pid {proc.pid}) {_how_it_ended(code)}", time.monotonic() - started

    async def stop(self, kind: str) -> None:
        """SIGTERM every worker of `kind` and wait until they have drained and
        exited (SIGKILL after the grace period and a margin)."""
        self.stopping.add(kind)
        running = [s.proc for s in self.slots[kind] if s.proc and s.proc.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                await asyncio.wait_for(proc.wait(), self.grace + EXIT_MARGIN_SECONDS)
            except TimeoutError:
                log.warning("%s worker (pid %s) did not exit in time; killing it", kind, proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def close(self) -> None:
        """Kill what still runs (only after a failure) and end the watch tasks."""
        self.stopping.update((CORE, GATEWAY))
        for slots in self.slots.values():
            for slot in slots:
                if slot.proc is not None and slot.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        slot.proc.kill()
                    await slot.proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _how_it_ended(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def run(settings: config.Settings) -> int:
    with stop_signals() as stop:
        log.info("configuration: %s", {**settings.redacted(), "event_loop": _loop_name()})
        with contextlib.ExitStack() as held:
            grpc_sock, grpc_listen = reserve(settings.grpc_listen)
            held.enter_context(grpc_sock)
            http_sock, http_listen = reserve(settings.http_listen)
            held.enter_context(http_sock)
            # what the workers would refuse, refused once, here, before anything starts
            tls.server_certificates(settings)
            channels.check_in_process(settings)
            # created once, here: every worker reads the same ones from the data directory
            auth.load_admin_token(settings.admin_token, settings.data_dir)
            auth.load_service_token(settings.service_token, settings.data_dir)
            auth.load_cursor_secret(settings.cursor_secret, settings.data_dir)
            auth.load_gateway_token(settings.gateway_token, settings.data_dir)
            metrics_dir = Path(tempfile.mkdtemp(prefix="wando-metrics-"))
            held.callback(shutil.rmtree, metrics_dir, True)
            async with postgres(settings) as dsn:
                await db.migrate_at(dsn)
                env = {
                    **_worker_environment(settings),
                    **await _pool_sizes(dsn, settings),
                    "WANDO_DATA_DIR": str(settings.data_dir),
                    "WANDO_DATABASE_URL": dsn,
                    "WANDO_GRPC_LISTEN": str(grpc_listen),
                    "WANDO_HTTP_LISTEN": str(http_listen),
                    "WANDO_CORE": loopback(grpc_listen),
                    "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                }
                envs = {CORE: env, GATEWAY: {**env, "WANDO_CORE": _gateway_core(settings, env)}}
                supervisor = Supervisor(
                    envs, metrics_dir, settings.workers, settings.shutdown_grace_seconds
                )
                try:
                    await _supervise(supervisor, settings, stop, metrics_dir)
                finally:
                    await supervisor.close()
    log.info("stopped")
    return 1 if supervisor.gave_up.is_set() else 0


# connections the workers leave to everything else: the supervisor's own,
# `wando admin`, a psql session, a migration of the next release
SPARE_CONNECTIONS = 10
SELECT_CONNECTION_LIMIT = """
SELECT current_setting('max_connections')::int
     - current_setting('superuser_reserved_connections')::int
"""


def pool_max_for(limit: int, workers: int, local: bool, wanted: int) -> int:
    """Each worker's pool size: `wanted` (WANDO_DB_POOL_MAX), or less when
    every worker's pool at that size would pass the server's `limit` (with
    the local core, gateways have pools too); 2 at least (one connection for
    LISTEN, one for requests)."""
    pools = workers * (2 if local else 1)
    return max(2, min(wanted, (limit - SPARE_CONNECTIONS) // pools))


async def _pool_sizes(dsn: str, settings: config.Settings) -> dict[str, str]:
    """WANDO_DB_POOL_MAX/MIN for the workers when WANDO_DB_POOL_MAX is not set:
    the default pool of 10 on every worker of a many-CPU machine (16 CPUs: 32
    pools, 320 connections) would pass PostgreSQL's max_connections (100 by
    default, the embedded server's too) and the workers would fail requests
    under load with "too many clients"."""
    if "WANDO_DB_POOL_MAX" in os.environ:
        return {}  # the operator sized it (README: PostgreSQL sizing)
    conn = await asyncpg.connect(dsn)
    try:
        limit = await conn.fetchval(SELECT_CONNECTION_LIMIT)
    finally:
        await conn.close()
    local = settings.serve_gateway_core == "local"
    size = pool_max_for(limit, settings.workers, local, settings.db_pool_max)
    if size < settings.db_pool_max:
        pools = settings.workers * (2 if local else 1)
        log.info(
            "each worker's database pool is %s (%s pools within max_connections %s)",
            size,
            pools,
            limit,
        )
        if pools * size + SPARE_CONNECTIONS > limit:
            log.warning(
                "PostgreSQL's max_connections (%s usable) is too small for %s pools; raise it "
                "or lower WANDO_WORKERS",
                limit,
                pools,
            )
    return {
        "WANDO_DB_POOL_MAX": str(size),
        "WANDO_DB_POOL_MIN": str(min(size, settings.db_pool_min)),
    }


def _gateway_core(settings: config.Settings, env: dict[str, str]) -> str:
    """WANDO_CORE for the gateway workers: by default (WANDO_SERVE_GATEWAY_CORE=local)
    each hosts the core's SCIM services itself (core.local), on its own pool,
    sparing every SCIM request the gRPC hop; `grpc`: they call the core workers
    on the shared port, as before."""
    if settings.serve_gateway_core == "local":
        return config.LOCAL_CORE
    return env["WANDO_CORE"]


def _worker_environment(settings: config.Settings) -> dict[str, str]:
    """The supervisor's environment, for its workers. The gateways reach the
    cores on loopback over TLS exactly when the cores serve TLS
    (common.channels.in_process): without WANDO_GRPC_TLS_*, client TLS settings
    meant for another core are dropped."""
    env = dict(os.environ)
    if settings.grpc_tls_cert is None:
        for name in (
            "WANDO_CORE_TLS_CA",
            "WANDO_CORE_TLS_CERT",
            "WANDO_CORE_TLS_KEY",
            "WANDO_CORE_TLS_SERVER_NAME",
        ):
            env.pop(name, None)
    return env


async def _supervise(
    supervisor: Supervisor, settings: config.Settings, stop: asyncio.Event, metrics_dir: Path
) -> None:
    serve_metrics(settings.metrics_listen, metrics_dir)
    if not stop.is_set():
        supervisor.start(CORE)
    if await supervisor.until_ready(CORE, stop):
        supervisor.start(GATEWAY)
        if await supervisor.until_ready(GATEWAY, stop):
            log.info(
                "serving with %s core and %s gateway workers", settings.workers, settings.workers
            )
    give_up = asyncio.ensure_future(supervisor.gave_up.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([give_up, stopped], return_when=asyncio.FIRST_COMPLETED)
    give_up.cancel()
    stopped.cancel()
    log.info(
        "shutting down: draining in-flight requests and calls (up to %ss)",
        settings.shutdown_grace_seconds,
    )
    await supervisor.stop(GATEWAY)  # first: their requests still need the cores
    await supervisor.stop(CORE)


def _loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
