"""The service under test, as it is deployed: `wando core` and `wando gateway`
as two processes on 127.0.0.1, on the suite's embedded PostgreSQL, with the
rate limiter off (it would throttle the load, which is its job)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import WANDO, Child, free_port, start

ADMIN_TOKEN = "wando_admin_bench-credential"
SERVICE_TOKEN = "wando_svc_bench-credential"
GATEWAY_TOKEN = "wando_gw_bench-credential"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
SCIM_PREFIX = "/api/auth/scim/v2"


@dataclass
class Service:
    dsn: str
    work: Path  # data dir and logs
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    core: Child | None = None
    gateway: Child | None = None
    starts: int = 0
    activity: bool = True  # the gateway records each SCIM request (issue #18)

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def scim_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}{SCIM_PREFIX}"

    @property
    def children(self) -> list[Child]:
        return [c for c in (self.core, self.gateway) if c is not None]

    def env(self) -> dict[str, str]:
        return {
            "WANDO_DATABASE_URL": self.dsn,
            "WANDO_DATA_DIR": str(self.work / "data"),
            "WANDO_GRPC_LISTEN": self.grpc_address,
            "WANDO_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "WANDO_CORE": self.grpc_address,
            "WANDO_METRICS_LISTEN": "",
            "WANDO_ADMIN_TOKEN": ADMIN_TOKEN,
            "WANDO_SERVICE_TOKEN": SERVICE_TOKEN,
            "WANDO_GATEWAY_TOKEN": GATEWAY_TOKEN,
            "WANDO_ACTIVITY": "on" if self.activity else "off",
            "WANDO_RATE_LIMIT_PER_SECOND": "0",  # 0 disables the per-organisation limit
            "WANDO_SHUTDOWN_GRACE_SECONDS": "2",
        }

    async def start(self) -> None:
        """Fresh core and gateway processes (their peak RSS starts anew),
        started side by side: the gateway connects to the core lazily."""
        self.starts += 1
        env = self.env()
        started = await asyncio.gather(
            start(
                "core",
                [WANDO, "core"],
                log_dir=self.work,
                env=env,
                ready="core gRPC listening",
                log_name=f"core-{self.starts}",
            ),
            start(
                "gateway",
                [WANDO, "gateway"],
                log_dir=self.work,
                env=env,
                ready="gateway listening",
                log_name=f"gateway-{self.starts}",
            ),
            return_exceptions=True,
        )
        core, gateway = started
        if isinstance(core, BaseException) or isinstance(gateway, BaseException):
            for child in started:
                if isinstance(child, Child):
                    await child.stop()
            raise next(e for e in started if isinstance(e, BaseException))
        self.core, self.gateway = core, gateway

    async def stop(self) -> None:
        # the gateway first: it still needs the core while it drains
        for child in (self.gateway, self.core):
            if child is not None:
                await child.stop()
        self.core = self.gateway = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()
