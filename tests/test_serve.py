"""`wando serve` on the embedded PostgreSQL: starts, keeps data across restarts,
drains on SIGTERM, exposes metrics; `wando migrate`; `wando core` alone
refuses a port that is taken."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import urllib.request
import uuid
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import asyncpg
import pytest

from cli import supervise
from common import config
from tests.support import free_port, run_wando, running


def serving(data_dir: Path, env: dict[str, str]) -> AbstractAsyncContextManager[list[str]]:
    return running("serve", "--data-dir", str(data_dir), env=env, ready="core gRPC listening")


async def oversized_authorization(port: int, secret: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    header = f"Authorization: Bearer {secret}{'x' * 9000}"
    writer.write(f"GET /api/auth/scim/v2/Users HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_serve_keeps_data_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    env = {
        "WANDO_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "WANDO_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "WANDO_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "WANDO_LOG_FORMAT": "json",
    }
    cli = {"WANDO_CORE": f"127.0.0.1:{grpc_port}", "WANDO_DATA_DIR": str(data_dir)}
    cli_env = {k: v for k, v in os.environ.items() if k != "WANDO_ADMIN_TOKEN"} | cli
    async with serving(data_dir, env) as lines:
        config_line = json.loads(lines[0])
        assert config_line["message"].startswith("configuration")
        assert "'event_loop': 'uvloop'" in config_line["message"]  # common/eventloop.py
        token_file = data_dir / "admin-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert token_file.read_text().strip() not in "".join(lines)
        code, out, err = await run_wando("admin", "--json", "org", "create", "acme", env=cli_env)
        assert code == 0, err
        code, out, err = await run_wando(
            "admin", "--json", "token", "issue", "--org", "acme", env=cli_env
        )
        assert code == 0, err
        secret = json.loads(out)["token"]
        # the real token in an oversized header: a SCIM error, and (below) in no log line
        status, body = await oversized_authorization(http_port, secret)
        assert status == 431 and json.loads(body)["status"] == "431", body
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=5
            ).read()
        )
        assert (
            b'wando_grpc_requests_total{code="OK",method="/wando.provisioning.v1.AdminService/CreateOrganization"}'
            in metrics
        )
    assert any("stopped" in line for line in lines)
    assert secret not in "".join(lines)
    assert any("refused a request" in line and "8192 bytes" in line for line in lines)

    async with serving(data_dir, env):
        code, out, err = await run_wando("admin", "--json", "org", "list", env=cli_env)
        assert code == 0, err
        assert [o["slug"] for o in json.loads(out)] == ["acme"]
        code, out, err = await run_wando(
            "admin", "--json", "token", "list", "--org", "acme", env=cli_env
        )
        assert len(json.loads(out)) == 1


async def test_migrate_applies_pending_migrations_and_exits(pg_server_dsn: str) -> None:
    from core import db
    from tests.support import with_database

    name = f"mig_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        env = {"WANDO_DATABASE_URL": with_database(pg_server_dsn, name)}
        code, _, err = await run_wando("migrate", env=env)
        assert code == 0, err
        newest = db.known_migrations()[-1]
        assert "applied migrations 0001, " in err and f"{newest.version:04d}" in err
        code, _, err = await run_wando("migrate", env=env)
        assert code == 0 and "nothing to apply" in err, err
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_second_core_on_a_taken_port_fails_to_start(
    database_dsn: str, tmp_path: Path
) -> None:
    """SO_REUSEPORT is for `wando serve`'s own workers only: a second
    `wando core` started by mistake on the port of another must not quietly
    take half of its connections."""
    port = free_port()
    env = {
        "WANDO_DATABASE_URL": database_dsn,
        "WANDO_DATA_DIR": str(tmp_path),
        "WANDO_GRPC_LISTEN": f"127.0.0.1:{port}",
        "WANDO_METRICS_LISTEN": "",
    }
    async with running("core", env=env, ready="core gRPC listening"):
        code, _, err = await run_wando("core", env=env)
    assert code == 1 and "cannot start" in err, err


def test_worker_pools_fit_within_max_connections() -> None:
    """Each worker's pool is WANDO_DB_POOL_MAX unless every worker's pool
    (a core's, and with the local core a gateway's too) would pass
    PostgreSQL's max_connections; 2 at least."""
    assert supervise.pool_max_for(97, workers=2, local=True, wanted=10) == 10
    assert supervise.pool_max_for(97, workers=8, local=True, wanted=10) == 5  # 87 // 16
    assert supervise.pool_max_for(97, workers=8, local=False, wanted=10) == 10
    assert supervise.pool_max_for(97, workers=16, local=True, wanted=10) == 2
    assert supervise.pool_max_for(97, workers=64, local=True, wanted=10) == 2  # and a warning


async def test_serve_sizes_the_pools_from_the_servers_limit(
    pg_server_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        limit = await conn.fetchval(supervise.SELECT_CONNECTION_LIMIT)
    finally:
        await conn.close()
    monkeypatch.delenv("WANDO_DB_POOL_MAX", raising=False)
    settings = config.load({"WANDO_WORKERS": "12"})
    sizes = await supervise._pool_sizes(pg_server_dsn, settings)
    expected = supervise.pool_max_for(limit, 12, settings.serve_gateway_core == "local", 10)
    assert sizes == {"WANDO_DB_POOL_MAX": str(expected), "WANDO_DB_POOL_MIN": "2"}
    # 24 pools of it fit (with the default 100, 3 each rather than 10)
    assert expected == 2 or 24 * expected + supervise.SPARE_CONNECTIONS <= limit
    # an operator's own size is left as it is
    monkeypatch.setenv("WANDO_DB_POOL_MAX", "7")
    assert await supervise._pool_sizes(pg_server_dsn, settings) == {}
