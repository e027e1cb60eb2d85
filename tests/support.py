"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc

from wando.provisioning.v1 import admin_service_pb2 as admin_pb
from wando.provisioning.v1 import admin_service_pb2_grpc as admin_grpc

ADMIN_TOKEN = "wando_admin_test-credential-for-the-suite"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
SERVICE_TOKEN = "wando_svc_test-credential-for-the-suite"
SERVICE = (("authorization", f"Bearer {SERVICE_TOKEN}"),)
GATEWAY_TOKEN = "wando_gw_test-credential-for-the-suite"
GATEWAY = (("authorization", f"Bearer {GATEWAY_TOKEN}"),)

# each gets the stderr (the logs) of every `wando` subprocess; tests/drills/logscan.py
# checks it for secrets
STDERR_WATCHERS: list[Callable[[str, str], None]] = []


def _watched(stderr: str, args: tuple[str, ...]) -> str:
    for watch in STDERR_WATCHERS:
        watch(stderr, f"stderr of wando {' '.join(args[:3])}")
    return stderr


def bearer(secret: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {secret}"),)


def with_database(dsn: str, name: str) -> str:
    """The same server DSN, naming another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def new_org_with_token(stub: admin_grpc.AdminServiceStub, slug: str) -> tuple[str, str]:
    """Create an organisation and issue it a token; returns (org id, secret)."""
    org = (
        await stub.CreateOrganization(admin_pb.CreateOrganizationRequest(slug=slug), metadata=ADMIN)
    ).organization
    issued = await stub.IssueScimToken(
        admin_pb.IssueScimTokenRequest(organization=slug), metadata=ADMIN
    )
    return org.id, issued.secret


async def org_id_of(db: asyncpg.Pool | asyncpg.Connection, slug: str) -> uuid.UUID:
    """An organisation's id, read from the database by its slug."""
    found: uuid.UUID = await db.fetchval("SELECT org_id FROM organizations WHERE slug = $1", slug)
    return found


@asynccontextmanager
async def serving_grpc(
    add: Callable[[Any, grpc.aio.Server], None], servicer: Any
) -> AsyncIterator[int]:
    """A grpc.aio server on a free loopback port with `servicer` registered by
    `add` (a generated add_*Servicer_to_server); yields the port."""
    server = grpc.aio.server()
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_wando(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run the installed `wando` command without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "wando"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    return proc.returncode or 0, out.decode(), _watched(err.decode(), args)


@asynccontextmanager
async def running(*args: str, env: dict[str, str], ready: str) -> AsyncIterator[list[str]]:
    """Run `wando ARGS` until its log shows `ready`; SIGTERM it on the way out
    and insist it exits 0."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "wando"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    lines: list[str] = []
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, f"wando {args[0]} exited early: {''.join(lines)}"
                lines.append(line)
                if ready in line:
                    break
        yield lines
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), timeout=60)
        lines.extend(rest.decode().splitlines(keepends=True))
        _watched("".join(lines), args)
        assert await proc.wait() == 0, "".join(lines)


def cli_env(core_port: int) -> dict[str, str]:
    """Environment for `wando admin …` against a test core, with both credentials."""
    return {
        "WANDO_CORE": f"127.0.0.1:{core_port}",
        "WANDO_ADMIN_TOKEN": ADMIN_TOKEN,
        "WANDO_SERVICE_TOKEN": SERVICE_TOKEN,
    }


async def cli_role(env: dict[str, str], org: str, user: str) -> str:
    """`wando admin --json roles show`: the user's role name, e.g. ROLE_ADMIN."""
    code, out, err = await run_wando(
        "admin", "--json", "roles", "show", "--org", org, "--user", user, env=env
    )
    assert code == 0, err
    role: str = json.loads(out)["role"]
    return role
