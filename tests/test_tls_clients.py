"""Engineers' clients of a TLS core (issue #14): `wando admin` (WANDO_CORE_TLS_*)
and grpcurl (-cacert, -cert, -key), as subprocesses over real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import trustme

from bench.load import run_spec
from core.server import CoreServer
from tests.scim_client import Scim, okta_user
from tests.support import SERVICE_TOKEN, cli_env, run_wando
from tests.test_grpcurl import grpcurl
from tests.tls_support import Leaf, Pki, tls_server

ROLE_SERVICE = "wando.provisioning.v1.RoleService"


@pytest.fixture
def clients_ca(pki: Pki) -> tuple[trustme.CA, Path]:
    return pki.ca("clients")


@pytest.fixture
async def mtls_core(
    pool: asyncpg.Pool, server_leaf: Leaf, clients_ca: tuple[trustme.CA, Path]
) -> AsyncIterator[CoreServer]:
    server = await tls_server(pool, server_leaf, clients_ca[1])
    yield server
    await server.stop(0)


async def test_wando_admin_reaches_a_tls_core_with_its_ca(
    tls_core: CoreServer, server_ca: tuple[trustme.CA, Path]
) -> None:
    env = cli_env(tls_core.port) | {"WANDO_CORE_TLS_CA": str(server_ca[1])}
    code, out, err = await run_wando("admin", "--json", "org", "create", "acme", env=env)
    assert code == 0, err
    assert json.loads(out)["slug"] == "acme"

    # in plaintext, one line that says what to check, exit 1
    code, out, err = await run_wando("admin", "org", "list", env=cli_env(tls_core.port))
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert "cannot reach the core" in err and "WANDO_CORE_TLS_" in err


async def test_wando_admin_presents_its_client_certificate(
    mtls_core: CoreServer,
    pki: Pki,
    server_ca: tuple[trustme.CA, Path],
    clients_ca: tuple[trustme.CA, Path],
) -> None:
    staff = pki.leaf(clients_ca[0], "staff", "staff.wando.internal")
    env = cli_env(mtls_core.port) | {"WANDO_CORE_TLS_CA": str(server_ca[1])}
    code, _, err = await run_wando("admin", "org", "list", env=env)
    assert code == 1 and "cannot reach the core" in err  # no client certificate

    env |= {"WANDO_CORE_TLS_CERT": str(staff.cert), "WANDO_CORE_TLS_KEY": str(staff.key)}
    code, out, err = await run_wando("admin", "--json", "org", "create", "acme", env=env)
    assert code == 0, err
    assert json.loads(out)["slug"] == "acme"


async def test_wando_admin_names_unusable_tls_files(
    tls_core: CoreServer, pki: Pki, server_ca: tuple[trustme.CA, Path]
) -> None:
    one, other = pki.leaf(server_ca[0], "one"), pki.leaf(server_ca[0], "other")
    env = cli_env(tls_core.port) | {
        "WANDO_CORE_TLS_CA": str(server_ca[1]),
        "WANDO_CORE_TLS_CERT": str(one.cert),
        "WANDO_CORE_TLS_KEY": str(other.key),
    }
    code, out, err = await run_wando("admin", "org", "list", env=env)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert f"{one.cert} and {other.key} do not make a pair" in err
    assert "PRIVATE KEY" not in err


async def test_grpcurl_lists_role_service_with_the_ca(
    tls_core: CoreServer, server_ca: tuple[trustme.CA, Path]
) -> None:
    address = f"127.0.0.1:{tls_core.port}"
    code, out, err = await grpcurl("-cacert", str(server_ca[1]), address, "list")
    assert code == 0, err
    assert ROLE_SERVICE in out.split()
    code, out, err = await grpcurl("-plaintext", address, "list")
    assert code != 0 and ROLE_SERVICE not in out


async def test_grpcurl_with_a_client_certificate(
    mtls_core: CoreServer,
    pki: Pki,
    server_ca: tuple[trustme.CA, Path],
    clients_ca: tuple[trustme.CA, Path],
) -> None:
    address = f"127.0.0.1:{mtls_core.port}"
    ca = ("-cacert", str(server_ca[1]))
    code, out, err = await grpcurl(*ca, address, "list")
    assert code != 0 and ROLE_SERVICE not in out
    staff = pki.leaf(clients_ca[0], "staff", "staff.wando.internal")
    code, out, err = await grpcurl(
        *ca, "-cert", str(staff.cert), "-key", str(staff.key), address, "list"
    )
    assert code == 0, err
    assert ROLE_SERVICE in out.split()


async def test_the_bench_load_client_reaches_a_tls_core(
    core: CoreServer,
    acme: Scim,
    tls_core: CoreServer,
    server_ca: tuple[trustme.CA, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench.load's RoleService workload, with WANDO_CORE_TLS_CA in its environment."""
    user = await acme.create_user(okta_user("alice@example.com"))
    spec = {
        "job": "role",
        "params": {"org": "acme", "user_ids": [user["id"]], "service_token": SERVICE_TOKEN},
        "grpc": f"127.0.0.1:{tls_core.port}",
        "core": True,
        "in_flight": 2,
        "seconds": 60,
        "max_jobs": 20,
    }
    monkeypatch.setenv("WANDO_CORE_TLS_CA", str(server_ca[1]))
    result = await run_spec(spec)
    assert (result["jobs"], result["errors"]) == (20, 0), result["error_samples"]
    monkeypatch.delenv("WANDO_CORE_TLS_CA")
    result = await run_spec(spec | {"max_jobs": 2})
    assert result["errors"] == 2  # in plaintext, refused
