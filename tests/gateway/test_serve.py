"""`wando serve` runs the gateway beside the core (by default its gateways host
the core's SCIM services themselves, WANDO_CORE=local; with
WANDO_SERVE_GATEWAY_CORE=grpc they call the core workers over gRPC on
loopback), and `wando gateway` runs it alone against a core: both as
subprocesses, spoken to over HTTP the way the README's curl examples do,
stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.support import LIST_URN, SCIM_JSON, okta_user
from tests.support import free_port, run_wando, running


@pytest.mark.parametrize("gateway_core", [None, "grpc"])
async def test_serve_and_gateway_answer_scim(tmp_path: Path, gateway_core: str | None) -> None:
    grpc_port, http_port, gateway_port = free_port(), free_port(), free_port()
    data_dir = tmp_path / "data"
    env = {
        "WANDO_DATA_DIR": str(data_dir),
        "WANDO_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "WANDO_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "WANDO_METRICS_LISTEN": "",
        **({"WANDO_SERVE_GATEWAY_CORE": gateway_core} if gateway_core else {}),
    }
    cli_env = {k: v for k, v in os.environ.items() if k != "WANDO_ADMIN_TOKEN"} | {
        "WANDO_CORE": f"127.0.0.1:{grpc_port}",
        "WANDO_DATA_DIR": str(data_dir),
    }
    base = f"http://127.0.0.1:{http_port}/api/auth/scim/v2"
    async with (
        running("serve", env=env, ready="gateway listening") as lines,
        aiohttp.ClientSession() as http,
    ):
        assert f"gateway listening on {base}" in lines[-1]
        async with http.get(f"{base}/ServiceProviderConfig") as r:
            assert r.status == 200 and r.headers["Content-Type"] == SCIM_JSON
            assert (await r.json(content_type=None))["patch"] == {"supported": True}
        async with http.get(f"{base}/Users") as r:
            assert r.status == 401 and (await r.json(content_type=None))["status"] == "401"

        code, out, err = await run_wando("admin", "--json", "org", "create", "acme", env=cli_env)
        assert code == 0, err
        code, out, err = await run_wando(
            "admin", "--json", "token", "issue", "--org", "acme", env=cli_env
        )
        assert code == 0, err
        secret = json.loads(out)["token"]
        auth = {"Authorization": f"Bearer {secret}"}
        async with http.get(f"{base}/Users?startIndex=1&count=2", headers=auth) as r:
            assert r.status == 200
            assert await r.json(content_type=None) == {
                "schemas": [LIST_URN],
                "totalResults": 0,
                "startIndex": 1,
                "itemsPerPage": 0,
                "Resources": [],
            }
        body = okta_user("curl.user@acme.example")
        async with http.post(f"{base}/Users", json=body, headers=auth) as r:
            assert r.status == 201, await r.text()
            assert r.headers["Location"].startswith(f"{base}/Users/")

        # a token revoked through a core worker stops working in the gateways
        # (README: within a second)
        code, out, err = await run_wando(
            "admin", "--json", "token", "issue", "--org", "acme", env=cli_env
        )
        assert code == 0, err
        issued = json.loads(out)
        other = {"Authorization": f"Bearer {issued['token']}"}
        async with http.get(f"{base}/Users", headers=other) as r:
            assert r.status == 200
        code, out, err = await run_wando(
            "admin", "token", "revoke", "--org", "acme", issued["token_id"], env=cli_env
        )
        assert code == 0, err
        for _ in range(50):
            async with http.get(f"{base}/Users", headers=other) as r:
                if r.status != 200:
                    break
            await asyncio.sleep(0.1)
        assert r.status == 401

        # the gateway alone, against the same core
        gateway_env = {"WANDO_HTTP_LISTEN": f"127.0.0.1:{gateway_port}", "WANDO_METRICS_LISTEN": ""}
        gateway_base = f"http://127.0.0.1:{gateway_port}/api/auth/scim/v2"
        async with running(
            "gateway",
            "--core",
            f"127.0.0.1:{grpc_port}",
            env=gateway_env,
            ready="gateway listening",
        ) as gateway_lines:
            url = f"{gateway_base}/Users?filter=userName%20eq%20%22CURL.USER%40acme.example%22"
            async with http.get(url, headers=auth) as r:
                found = await r.json(content_type=None)
                assert r.status == 200 and found["totalResults"] == 1, found
        assert any("stopped" in line for line in gateway_lines)
        assert secret not in "".join(gateway_lines)

    assert any("stopped" in line for line in lines)
    assert secret not in "".join(lines)
    assert "1mz050nq" not in "".join(lines)
    shape = "in this process (local)" if gateway_core is None else "forwarding to the core"
    assert any(shape in line and "gateway-1" in line for line in lines)


async def test_a_local_core_gateway_needs_the_database_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WANDO_DATABASE_URL"}
    code, _, err = await run_wando(
        "gateway", "--core", "local", env=env | {"WANDO_DATA_DIR": str(tmp_path)}
    )
    assert code != 0
    assert "WANDO_CORE=local needs WANDO_DATABASE_URL" in err
