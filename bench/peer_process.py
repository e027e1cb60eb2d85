"""The peer as a process: bench.peer's application under uvicorn, one worker,
in memory, on 127.0.0.1; and what it does and does not do beside Wando."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from bench.processes import PYTHON, Child, free_port, start

TOKEN = "peer-bench-token"
TOKEN_ENV = "PEER_TOKEN"  # bench.peer reads its token there
PREFIX = "/v2"  # where scim2-server serves SCIM

# printed under the table, kept in results.json
NOTES = (
    "scim2-server keeps everything in memory: no durability, no other process to call",
    "it checks no member references (a PATCH may add an id no user has) and does not "
    "derive a user's `groups`: its GET /Users/{id} renders less than ours",
    "its first push goes to its one tenant, which holds the seeded users (ours goes to an "
    "empty organisation); its groups' members are seeded users",
)
# Wando workloads with no peer figure, and why
NOT_COMPARED = {
    "role": "Wando's gRPC RoleService; scim2-server has no roles",
    "role-batch": "Wando's gRPC RoleService; scim2-server has no roles",
    "group-replace": "not compared (a structural check of ours)",
    "import-small": "ours only (the peak-RSS check)",
}


def describe() -> str:
    """What runs as the peer, with versions."""
    return (
        f"scim2-server {version('scim2-server')} (scim2-models {version('scim2-models')}), "
        f"in memory, under uvicorn {version('uvicorn')} (uvloop, httptools), one worker, "
        "access log off"
    )


@dataclass
class Peer:
    work: Path  # logs
    port: int = field(default_factory=free_port)
    process: Child | None = None

    @property
    def scim_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    @property
    def children(self) -> list[Child]:
        return [self.process] if self.process is not None else []

    @property
    def cpu_roots(self) -> list[int]:
        return [c.pid for c in self.children]

    async def start(self) -> None:
        argv = [PYTHON, "-m", "uvicorn", "bench.peer:app", "--factory", "--workers", "1"]
        argv += ["--loop", "uvloop", "--http", "httptools"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"]
        self.process = await start(
            "peer", argv, log_dir=self.work, env={TOKEN_ENV: TOKEN}, ready="Uvicorn running on"
        )

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
        self.process = None
