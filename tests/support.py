"""Helpers shared by the tests."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from wando.provisioning.v1 import admin_service_pb2 as admin_pb
from wando.provisioning.v1 import admin_service_pb2_grpc as admin_grpc

ADMIN_TOKEN = "wando_admin_test-credential-for-the-suite"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
SERVICE_TOKEN = "wando_svc_test-credential-for-the-suite"
SERVICE = (("authorization", f"Bearer {SERVICE_TOKEN}"),)


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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_wando(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run the installed `wando` command without blocking the event loop."""
    import asyncio
    import os
    import sys
    from pathlib import Path

    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "wando"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    return proc.returncode or 0, out.decode(), err.decode()
