"""The README's snippet for Wando's service teams (RoleService over mTLS with
the service credential) runs as printed, against a real mTLS core; and
grpcurl's -servername reaches a core by IP, as the README shows."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from pathlib import Path

import asyncpg
import trustme

from tests.scim_client import Scim, okta_user
from tests.support import SERVICE_TOKEN
from tests.test_grpcurl import grpcurl
from tests.tls_support import Leaf, Pki, tls_server, write_atomically

README = Path(__file__).parent.parent / "README.md"
HEADING = "### For Wando's service teams: calling RoleService over mTLS"


def snippet() -> str:
    section = README.read_text().split(HEADING, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the README lost its service-team snippet"
    return match.group(1)


async def test_the_service_team_snippet_reads_a_role_over_mtls(
    pool: asyncpg.Pool,
    acme: Scim,
    pki: Pki,
    server_ca: tuple[trustme.CA, Path],
    tmp_path: Path,
) -> None:
    await acme.create_user(okta_user("alice@example.com"))
    clients_ca, clients_ca_file = pki.ca("clients")
    server = await tls_server(pool, pki.leaf(server_ca[0], "core"), clients_ca_file)
    try:
        service: Leaf = pki.leaf(clients_ca, "my-service", "my-service.wando.internal")
        token = write_atomically(tmp_path / "service-token", SERVICE_TOKEN.encode() + b"\n")
        code = snippet()
        for name, value in {
            "CORE": f"localhost:{server.port}",
            "CORE_CA": str(server_ca[1]),
            "SERVICE_TOKEN": str(token),
        }.items():
            code, n = re.subn(rf'^{name} = "[^"]*"', f"{name} = {value!r}", code, flags=re.M)
            assert n == 1, f"the snippet no longer sets {name}"
        code, n = re.subn(
            r'^CERT, KEY = "[^"]*", "[^"]*"',
            f"CERT, KEY = {str(service.cert)!r}, {str(service.key)!r}",
            code,
            flags=re.M,
        )
        assert n == 1, "the snippet no longer sets CERT, KEY"
        printed = io.StringIO()

        def run() -> None:
            with contextlib.redirect_stdout(printed):
                exec(compile(code, "README snippet", "exec"), {})  # noqa: S102 - our own README

        await asyncio.to_thread(run)
        role, sequence = printed.getvalue().split()
        assert role == "ROLE_MEMBER"  # the default role: nothing is mapped yet
        assert int(sequence) >= 0
    finally:
        await server.stop(0)


async def test_grpcurl_servername_reaches_a_core_by_ip(
    pool: asyncpg.Pool, pki: Pki, server_ca: tuple[trustme.CA, Path]
) -> None:
    named = pki.leaf(server_ca[0], "named", "core.wando.internal")  # no 127.0.0.1 in it
    server = await tls_server(pool, named)
    try:
        address = f"127.0.0.1:{server.port}"
        code, _, err = await grpcurl("-cacert", str(server_ca[1]), address, "list")
        assert code != 0
        code, out, err = await grpcurl(
            "-cacert", str(server_ca[1]), "-servername", "core.wando.internal", address, "list"
        )
        assert code == 0, err
        assert "wando.provisioning.v1.RoleService" in out.split()
    finally:
        await server.stop(0)
