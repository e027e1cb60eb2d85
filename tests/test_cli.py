"""`wando admin`: what staff type, against a real core."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli import activity, admin
from cli.client import CliError
from core.server import CoreServer
from tests.scim_client import Scim, okta_user
from tests.support import ADMIN_TOKEN, SERVICE_TOKEN, free_port, run_wando


def env_for(core: CoreServer, token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {
        "WANDO_CORE": f"127.0.0.1:{core.port}",
        "WANDO_ADMIN_TOKEN": token,
        "WANDO_PUBLIC_BASE_URL": "https://scim.example.test",
    }


async def test_org_create_and_token_issue_with_json(core: CoreServer) -> None:
    env = env_for(core)
    code, out, err = await run_wando(
        "admin", "--json", "org", "create", "acme", "--name", "Acme", env=env
    )
    assert code == 0, err
    assert json.loads(out)["slug"] == "acme"
    code, out, err = await run_wando(
        "admin", "--json", "token", "issue", "--org", "acme", "--description", "Okta", env=env
    )
    assert code == 0, err
    issued = json.loads(out)
    assert issued["token"].startswith("wando_scim_")
    assert issued["scim_base_url"] == "https://scim.example.test/api/auth/scim/v2"
    code, out, err = await run_wando("admin", "--json", "token", "list", "--org", "acme", env=env)
    assert code == 0, err
    listed = json.loads(out)
    assert [t["id"] for t in listed] == [issued["token_id"]]
    assert issued["token"] not in out  # the secret is never shown again

    code, out, err = await run_wando(
        "admin", "token", "revoke", "--org", "acme", issued["token_id"], env=env
    )
    assert code == 0, err
    code, out, err = await run_wando("admin", "--json", "token", "list", "--org", "acme", env=env)
    assert json.loads(out) == []


async def test_token_issue_tells_what_to_paste_into_okta(core: CoreServer) -> None:
    env = env_for(core)
    await run_wando("admin", "org", "create", "acme", env=env)
    code, out, err = await run_wando("admin", "token", "issue", "--org", "acme", env=env)
    assert code == 0, err
    assert "wando_scim_" in out
    assert "https://scim.example.test/api/auth/scim/v2" in out
    assert "userName" in out and "HTTP Header" in out
    code, out, _ = await run_wando("admin", "org", "list", env=env)
    assert out.startswith("acme\t")


async def test_unreachable_core_is_one_clear_line() -> None:
    env = {"WANDO_CORE": f"127.0.0.1:{free_port()}", "WANDO_ADMIN_TOKEN": ADMIN_TOKEN}
    code, _out, err = await run_wando("admin", "org", "list", env=env)
    assert code == 1
    assert err.count("\n") == 1 and "cannot reach the core" in err
    assert "Traceback" not in err


async def test_bad_credential_is_one_clear_line(core: CoreServer) -> None:
    code, _out, err = await run_wando("admin", "org", "list", env=env_for(core, "wrong"))
    assert code == 1
    assert err.strip() == "wando: the core refused the admin credential (check WANDO_ADMIN_TOKEN)"


async def test_core_errors_are_reported_without_traceback(core: CoreServer) -> None:
    env = env_for(core)
    code, _, err = await run_wando("admin", "token", "issue", "--org", "nope", env=env)
    assert code == 1 and "NOT_FOUND" in err and "nope" in err and "Traceback" not in err
    code, _, err = await run_wando(
        "admin", "token", "issue", "--org", "x", "--expires-in", "soon", env=env
    )
    assert code == 1 and "--expires-in" in err


async def test_roles_and_audit_from_the_cli(core: CoreServer, acme: Scim) -> None:
    env = env_for(core) | {"WANDO_SERVICE_TOKEN": SERVICE_TOKEN}
    alice = await acme.create_user(okta_user("alice@example.com"))
    await acme.create_group({"displayName": "Wando Admins", "members": [{"value": alice["id"]}]})

    code, out, err = await run_wando(
        "admin",
        "roles",
        "preview",
        "--org",
        "acme",
        "--group",
        "wando admins",
        "--role",
        "admin",
        env=env,
    )
    assert code == 0, err
    assert out.strip() == "alice@example.com\tmember → admin"
    code, out, err = await run_wando(
        "admin",
        "roles",
        "map",
        "--org",
        "acme",
        "--group",
        "Wando Admins",
        "--role",
        "admin",
        env=env,
    )
    assert code == 0, err
    assert "1 users' role changed" in out
    code, out, err = await run_wando(
        "admin", "roles", "show", "--org", "acme", "--user", "ALICE@example.com", env=env
    )
    assert code == 0, err
    assert out.strip() == "alice@example.com: admin (from group Wando Admins)"
    code, out, err = await run_wando("admin", "--json", "roles", "list", "--org", "acme", env=env)
    assert json.loads(out)["mappings"][0]["display_name"] == "Wando Admins"
    code, out, err = await run_wando(
        "admin", "roles", "show", "--org", "acme", "--user", "bob@example.com", env=env
    )
    assert code == 1 and "no user" in err

    code, out, err = await run_wando("admin", "--json", "audit", "--org", "acme", env=env)
    assert code == 0, err
    events = json.loads(out)
    assert [e["action"] for e in events][:3] == ["map", "create", "create"]
    assert events[0]["actor"] == "admin" and events[1]["resource_type"] == "Group"


async def test_wando_core_may_name_several_cores(core: CoreServer) -> None:
    """As the gateway takes it: a list (one address here is dead) or a dns:/// target."""
    for where in (
        f"127.0.0.1:{free_port()},127.0.0.1:{core.port}",
        f"dns:///127.0.0.1:{core.port}",
    ):
        env = {**env_for(core), "WANDO_CORE": where}
        code, out, err = await run_wando("admin", "--json", "org", "list", env=env)
        assert code == 0, err
        assert json.loads(out) == []


async def test_org_show_roles_default_unmap_and_watch(core: CoreServer, acme: Scim) -> None:
    env = env_for(core) | {"WANDO_SERVICE_TOKEN": SERVICE_TOKEN}
    code, out, err = await run_wando("admin", "org", "show", "acme", env=env)
    assert code == 0, err
    assert out.startswith("acme\t")
    await acme.create_user(okta_user("alice@example.com") | {"roles": [{"value": "wando-boss"}]})

    watch = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "wando"),
        *("admin", "--json", "roles", "watch", "--org", "acme"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        code, out, err = await run_wando(
            "admin", "roles", "default", "--org", "acme", "--role", "boss", env=env
        )
        assert (code, out.strip()) == (0, "default role boss (1 users' role changed)"), err
        code, out, err = await run_wando(
            "admin",
            "roles",
            "map",
            "--org",
            "acme",
            "--value",
            "wando-boss",
            "--role",
            "admin",
            env=env,
        )
        assert code == 0, err
        code, out, err = await run_wando(
            "admin", "roles", "unmap", "--org", "acme", "--value", "wando-boss", env=env
        )
        assert (code, out.strip()) == (0, "unmapped (1 users' role changed)"), err
        assert watch.stdout is not None
        seen = []
        for _ in range(4):  # created as member → boss → admin → boss
            line = await asyncio.wait_for(watch.stdout.readline(), timeout=60)
            seen.append(json.loads(line))
        assert [(c.get("old_role"), c["new_role"]) for c in seen] == [
            (None, "ROLE_MEMBER"),
            ("ROLE_MEMBER", "ROLE_BOSS"),
            ("ROLE_BOSS", "ROLE_ADMIN"),
            ("ROLE_ADMIN", "ROLE_BOSS"),
        ]
    finally:
        watch.send_signal(signal.SIGINT)  # Ctrl-C ends it quietly
        _, err_bytes = await asyncio.wait_for(watch.communicate(), timeout=60)
    assert watch.returncode == 0, err_bytes.decode()
    assert err_bytes == b""


def test_durations_of_since_and_expires_in() -> None:
    """--since looks back and --expires-in ahead by the same kind of duration;
    a unit the flag does not take is one line naming the flag."""
    before = datetime.now(UTC)
    since = activity.since("15m")
    assert since is not None
    assert abs(since.ToDatetime(tzinfo=UTC) - (before - timedelta(minutes=15))) < timedelta(
        seconds=5
    )
    assert activity.since("45s") is not None and activity.since("") is None
    expiry = admin._expiry("90d")
    assert expiry is not None
    assert abs(expiry.ToDatetime(tzinfo=UTC) - (before + timedelta(days=90))) < timedelta(seconds=5)
    with pytest.raises(CliError, match=r"^--since must look like 30s, 15m, 1h or 7d, got '1w'$"):
        activity.since("1w")
    with pytest.raises(CliError, match=r"^--expires-in must look like 90d, 12h or 30m, got '45s'$"):
        admin._expiry("45s")  # seconds are --since's only
