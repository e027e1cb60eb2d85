"""The service under test, as it is deployed, on 127.0.0.1 and the suite's
embedded PostgreSQL, with the rate limiter off (it would throttle the load,
which is its job). Two shapes (`python -m bench --service`):

- `serve` (the default deployment): one `wando serve`, a supervisor with N
  core and N gateway worker processes (default one of each per CPU;
  `--workers N`);
- `split`: `wando core` and `wando gateway` as two processes;
- `local`: the same, the gateway with WANDO_CORE=local (the core's SCIM
  services in its own process, as `wando serve`'s gateway workers have them);
  the core serves the role workloads.

Its CPU is that of these processes' trees and of PostgreSQL's (the
postmaster and every backend it forks)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import WANDO, Child, free_port, start
from common import channels, config

MODES = ("serve", "split", "local")
SERVE = [WANDO, "serve"]

ADMIN_TOKEN = "wando_admin_bench-credential"
SERVICE_TOKEN = "wando_svc_bench-credential"
GATEWAY_TOKEN = "wando_gw_bench-credential"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
SCIM_PREFIX = "/api/auth/scim/v2"


@dataclass(frozen=True)
class Replica:
    child: Child
    port: int


def core_tls() -> channels.ClientTLS | None:
    """How the bench's own clients reach the core: as WANDO_CORE_TLS_* in the
    environment say (the core and gateway processes inherit the environment,
    so WANDO_GRPC_TLS_* there runs the whole bench over TLS)."""
    return channels.client_tls(config.load())


@dataclass
class Service:
    dsn: str
    work: Path  # data dir and logs
    postmaster: int  # pid of the PostgreSQL server it runs on
    mode: str = "serve"  # MODES
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    processes: list[Child] = field(default_factory=list)
    starts: int = 0
    # `wando serve` with this many workers of each tier (WANDO_WORKERS); None:
    # its default, one of each per CPU
    serve_workers: int | None = None
    # charge every SCIM request to the organisation's fleet-wide rate limit (one
    # upsert in PostgreSQL, core.ratelimit) at a limit never reached: its cost
    rate_limit: bool = False
    activity: bool = True  # the gateway records each SCIM request (issue #18)
    # a second service in the same run (`--against-workers`) names its logs apart
    label: str = ""
    # run the sources exported there (bench.ab: another revision), not the installed ones
    source: Path | None = None

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def scim_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}{SCIM_PREFIX}"

    @property
    def children(self) -> list[Child]:
        return list(self.processes)

    @property
    def cpu_roots(self) -> list[int]:
        """Where its CPU goes: its processes and PostgreSQL, as trees."""
        return [*(c.pid for c in self.processes), self.postmaster]

    def env(self) -> dict[str, str]:
        return {
            "WANDO_DATABASE_URL": self.dsn,
            "WANDO_DATA_DIR": str(self.work / f"data{self.label}"),
            "WANDO_GRPC_LISTEN": self.grpc_address,
            "WANDO_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "WANDO_CORE": self.grpc_address,
            "WANDO_METRICS_LISTEN": "",
            "WANDO_ADMIN_TOKEN": ADMIN_TOKEN,
            "WANDO_SERVICE_TOKEN": SERVICE_TOKEN,
            "WANDO_GATEWAY_TOKEN": GATEWAY_TOKEN,
            "WANDO_ACTIVITY": "on" if self.activity else "off",
            # 0 disables the per-organisation limit
            "WANDO_RATE_LIMIT_PER_SECOND": "1000000" if self.rate_limit else "0",
            "WANDO_RATE_LIMIT_BURST": "1000000",
            "WANDO_SHUTDOWN_GRACE_SECONDS": "2",
            **({"WANDO_WORKERS": str(self.serve_workers)} if self.serve_workers else {}),
            **({"PYTHONPATH": f"{self.source}:{self.source / 'protos'}"} if self.source else {}),
        }

    def gateway_env(self) -> dict[str, str]:
        """A split or local mode gateway's environment."""
        env = self.env()
        if self.mode == "local":
            env["WANDO_CORE"] = config.LOCAL_CORE
        return env

    def _commands(self) -> list[tuple[str, list[str], str, dict[str, str]]]:
        """(name, argv, line that says it is ready, environment) of each process."""
        if self.mode == "serve":  # the supervisor's line once every worker serves
            return [("serve", SERVE, "serving with", self.env())]
        return [
            ("core", [WANDO, "core"], "core gRPC listening", self.env()),
            ("gateway", [WANDO, "gateway"], "gateway listening", self.gateway_env()),
        ]

    async def start(self) -> None:
        """Fresh processes (their peak RSS starts anew), started side by side:
        a split gateway connects to the core lazily. A local gateway reads the
        database itself and refuses a schema short of its own, so it starts
        once the core (which migrates) is up."""
        self.starts += 1
        commands = self._commands()
        first = [c for c in commands if self.mode == "local" and c[0] == "core"]
        started: list[Child | BaseException] = []
        for group in (first, [c for c in commands if c not in first]):
            started += await asyncio.gather(
                *(
                    start(
                        name,
                        argv,
                        log_dir=self.work,
                        env=env,
                        ready=ready,
                        log_name=f"{name}{self.label}-{self.starts}",
                    )
                    for name, argv, ready, env in group
                ),
                return_exceptions=True,
            )
            if any(isinstance(e, BaseException) for e in started):
                break
        failed = [e for e in started if isinstance(e, BaseException)]
        if failed:
            for child in started:
                if isinstance(child, Child):
                    await child.stop()
            raise failed[0]
        self.processes = [c for c in started if isinstance(c, Child)]

    async def stop(self) -> None:
        # a split gateway first: it still needs the core while it drains
        for child in reversed(self.processes):
            await child.stop()
        self.processes = []

    async def second_core(self) -> Replica:
        """Another `wando core` on the same database (a second replica), on a
        port of its own; the caller stops it."""
        port = free_port()
        env = {**self.env(), "WANDO_GRPC_LISTEN": f"127.0.0.1:{port}"}
        child = await start(
            "core-b", [WANDO, "core"], log_dir=self.work, env=env, ready="core gRPC listening"
        )
        return Replica(child, port)

    async def restart(self) -> None:
        await self.stop()
        await self.start()
