"""Starting with TLS (issue #14): the settings, the refusal of plaintext on a
network address and its opt-out, and `wando serve` over TLS and mTLS as the
README shows it (grpcurl, `wando admin` and the SCIM gateway), as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import trustme

from common import config
from tests.support import free_port, run_wando, running
from tests.test_grpcurl import grpcurl
from tests.tls_support import Leaf, Pki

ROLE_SERVICE = "wando.provisioning.v1.RoleService"


def test_tls_settings(server_leaf: Leaf, server_ca: tuple[trustme.CA, Path]) -> None:
    settings = config.load(
        env={
            "WANDO_GRPC_TLS_CERT": str(server_leaf.cert),
            "WANDO_GRPC_TLS_KEY": str(server_leaf.key),
            "WANDO_GRPC_TLS_CLIENT_CA": str(server_ca[1]),
            "WANDO_CORE_TLS_CA": str(server_ca[1]),
            "WANDO_CORE_TLS_SERVER_NAME": "core.wando.internal",
        }
    )
    assert (settings.grpc_tls_cert, settings.grpc_tls_key) == (server_leaf.cert, server_leaf.key)
    assert settings.grpc_tls_client_ca == settings.core_tls_ca == server_ca[1]
    assert settings.core_tls_server_name == "core.wando.internal"
    assert settings.grpc_insecure is False
    assert config.load(env={"WANDO_GRPC_INSECURE": "1"}).grpc_insecure is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"WANDO_GRPC_TLS_CERT": "{cert}"},
            "WANDO_GRPC_TLS_CERT and WANDO_GRPC_TLS_KEY go together",
        ),
        ({"WANDO_CORE_TLS_KEY": "{key}"}, "WANDO_CORE_TLS_CERT and WANDO_CORE_TLS_KEY go together"),
        ({"WANDO_GRPC_TLS_CLIENT_CA": "{cert}"}, "WANDO_GRPC_TLS_CLIENT_CA needs"),
        ({"WANDO_CORE_TLS_CA": "/nonexistent/ca.pem"}, "WANDO_CORE_TLS_CA: no such file"),
        ({"WANDO_GRPC_INSECURE": "maybe"}, "WANDO_GRPC_INSECURE must be 1 or 0"),
        (
            {"WANDO_CORE_TLS_SERVER_NAME": "core"},
            "WANDO_CORE_TLS_SERVER_NAME needs WANDO_CORE_TLS_CA",
        ),
    ],
)
def test_malformed_tls_settings_are_refused(
    server_leaf: Leaf, env: dict[str, str], message: str
) -> None:
    paths = {"cert": str(server_leaf.cert), "key": str(server_leaf.key)}
    with pytest.raises(config.ConfigError, match=message):
        config.load(env={k: v.format(**paths) for k, v in env.items()})


async def test_plaintext_on_a_network_address_is_refused(tmp_path: Path) -> None:
    listen = f"0.0.0.0:{free_port()}"
    env = {"WANDO_GRPC_LISTEN": listen, "WANDO_DATA_DIR": str(tmp_path)}
    code, _, err = await run_wando("core", env=env)
    assert code == 2
    assert err.splitlines()[-1] == (
        f"wando: configuration error: refusing plaintext gRPC on {listen}, which is not a "
        "loopback address: set WANDO_GRPC_TLS_CERT and WANDO_GRPC_TLS_KEY, or "
        "WANDO_GRPC_INSECURE=1 if the network is trusted"
    )
    assert not (tmp_path / "postgres").exists()  # refused before anything started


async def test_the_insecure_opt_out_starts_and_warns(tmp_path: Path, database_dsn: str) -> None:
    port = free_port()
    env = {
        "WANDO_GRPC_LISTEN": f"0.0.0.0:{port}",
        "WANDO_GRPC_INSECURE": "1",
        "WANDO_DATABASE_URL": database_dsn,
        "WANDO_DATA_DIR": str(tmp_path),
        "WANDO_METRICS_LISTEN": "",
    }
    async with running("core", env=env, ready="core gRPC listening") as lines:
        warning = next(line for line in lines if "WANDO_GRPC_INSECURE=1" in line)
        assert "WARNING" in warning and "PLAINTEXT" in warning
        assert "(plaintext)" in lines[-1]
        code, out, err = await grpcurl("-plaintext", f"127.0.0.1:{port}", "list")
        assert code == 0, err
        assert ROLE_SERVICE in out.split()


async def test_serve_with_a_certificate_needs_the_ca_for_its_gateway(
    tmp_path: Path, server_leaf: Leaf
) -> None:
    env = {
        "WANDO_GRPC_TLS_CERT": str(server_leaf.cert),
        "WANDO_GRPC_TLS_KEY": str(server_leaf.key),
        "WANDO_DATA_DIR": str(tmp_path),
        "WANDO_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
    }
    code, _, err = await run_wando("serve", env=env)
    assert code == 2
    assert "set WANDO_CORE_TLS_CA to the CA that signed" in err.splitlines()[-1]


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
async def test_serve_over_tls(
    tmp_path: Path,
    database_dsn: str,
    pki: Pki,
    server_ca: tuple[trustme.CA, Path],
    server_leaf: Leaf,
    mutual: bool,
) -> None:
    """The issue's "done when", with the variables in one environment for the
    server and the CLI, as on one machine."""
    grpc_port, http_port = free_port(), free_port()
    address = f"127.0.0.1:{grpc_port}"
    tls = {
        "WANDO_GRPC_TLS_CERT": str(server_leaf.cert),
        "WANDO_GRPC_TLS_KEY": str(server_leaf.key),
        "WANDO_CORE_TLS_CA": str(server_ca[1]),
    }
    grpcurl_tls = ["-cacert", str(server_ca[1])]
    if mutual:
        clients_ca, clients_ca_file = pki.ca("clients")
        ops = pki.leaf(clients_ca, "ops", "ops.wando.internal")
        tls |= {
            "WANDO_GRPC_TLS_CLIENT_CA": str(clients_ca_file),
            "WANDO_CORE_TLS_CERT": str(ops.cert),
            "WANDO_CORE_TLS_KEY": str(ops.key),
        }
        grpcurl_tls += ["-cert", str(ops.cert), "-key", str(ops.key)]
    env = tls | {
        "WANDO_DATABASE_URL": database_dsn,
        "WANDO_DATA_DIR": str(tmp_path / "data"),
        "WANDO_GRPC_LISTEN": address,
        "WANDO_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "WANDO_METRICS_LISTEN": "",
    }
    cli = {k: v for k, v in os.environ.items() if k != "WANDO_ADMIN_TOKEN"} | env
    base = f"http://127.0.0.1:{http_port}/api/auth/scim/v2"
    async with (
        running("serve", env=env, ready="gateway listening") as lines,
        aiohttp.ClientSession() as http,
    ):
        assert any(
            f"core gRPC listening on {address} ({'mTLS' if mutual else 'TLS'})" in line
            for line in lines
        )
        code, out, err = await grpcurl(*grpcurl_tls, address, "list")
        assert code == 0, err
        assert ROLE_SERVICE in out.split()
        code, out, err = await grpcurl("-plaintext", address, "list")
        assert code != 0 and ROLE_SERVICE not in out
        if mutual:
            code, out, err = await grpcurl(*grpcurl_tls[:2], address, "list")
            assert code != 0 and ROLE_SERVICE not in out

        code, out, err = await run_wando("admin", "--json", "org", "create", "acme", env=cli)
        assert code == 0, err
        code, out, err = await run_wando(
            "admin", "--json", "token", "issue", "--org", "acme", env=cli
        )
        assert code == 0, err
        auth = {"Authorization": f"Bearer {json.loads(out)['token']}"}
        async with http.get(f"{base}/Users?startIndex=1&count=2", headers=auth) as r:
            assert r.status == 200
            assert (await r.json(content_type=None))["totalResults"] == 0
    logged = "".join(lines)
    for secret_file in (server_leaf.key, *([ops.key] if mutual else [])):
        assert secret_file.read_text().strip().splitlines()[1] not in logged


async def test_sighup_rereads_the_certificates_and_keeps_serving(
    tmp_path: Path, database_dsn: str, server_ca: tuple[trustme.CA, Path], server_leaf: Leaf
) -> None:
    port = free_port()
    env = {
        "WANDO_GRPC_TLS_CERT": str(server_leaf.cert),
        "WANDO_GRPC_TLS_KEY": str(server_leaf.key),
        "WANDO_GRPC_LISTEN": f"127.0.0.1:{port}",
        "WANDO_DATABASE_URL": database_dsn,
        "WANDO_DATA_DIR": str(tmp_path),
        "WANDO_METRICS_LISTEN": "",
    }
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "wando"),
        "core",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(60):
            while b"core gRPC listening" not in await proc.stderr.readline():
                pass
        proc.send_signal(signal.SIGHUP)  # the default action would end the process
        for _ in range(3):
            code, out, err = await grpcurl(
                "-cacert", str(server_ca[1]), f"127.0.0.1:{port}", "list"
            )
            assert code == 0, err
            assert ROLE_SERVICE in out.split()
        assert proc.returncode is None
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.stderr.read(), timeout=60)).decode()
        assert await proc.wait() == 0, rest
    assert "certificate files re-read" in rest
