"""`wando admin org status` (issue #18, part 3): onboarding at a glance, and
the next step at each stage of a customer's connection — through the real
gateway, core, PostgreSQL and CLI."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from core import activity, organization_status, tokens
from core.server import CoreServer
from gateway import activity as gateway_activity
from gateway.keys import ACTIVITY
from tests.gateway.support import GROUP_URN, ScimHttp, okta_user
from tests.support import ADMIN, ADMIN_TOKEN, run_wando
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import admin_service_pb2_grpc as agrpc


async def status(core: CoreServer, slug: str) -> tuple[str, dict[str, Any]]:
    env = {"WANDO_CORE": f"127.0.0.1:{core.port}", "WANDO_ADMIN_TOKEN": ADMIN_TOKEN}
    code, text, err = await run_wando("admin", "org", "status", slug, env=env)
    assert code == 0, err
    code, out, err = await run_wando("admin", "--json", "org", "status", slug, env=env)
    assert code == 0, err
    return text, json.loads(out)


async def test_before_the_customer_connects(
    core: CoreServer, admin_stub: agrpc.AdminServiceStub
) -> None:
    await admin_stub.CreateOrganization(apb.CreateOrganizationRequest(slug="acme"), metadata=ADMIN)
    text, _ = await status(core, "acme")
    assert "No live token: issue one with `wando admin token issue --org acme`" in text
    await admin_stub.IssueScimToken(apb.IssueScimTokenRequest(organization="acme"), metadata=ADMIN)
    text, data = await status(core, "acme")
    assert "A token is issued but was never used" in text
    assert data["tokens"][0]["token"]["display_prefix"].startswith("wando_scim_")
    assert "users: 0 active, 0 inactive; groups: 0" in text


async def test_after_a_first_push_with_groups_none_mapped(
    client: TestClient[Any, Any],
    core: CoreServer,
    scim: ScimHttp,
    admin_stub: agrpc.AdminServiceStub,
) -> None:
    ids = []
    for name in ("ada", "bob", "cy"):
        reply = await scim.post("/Users", okta_user(f"{name}@initech.example"))
        ids.append(reply.body["id"])
    (await scim.post("/Users", okta_user("ada@initech.example"))).assert_error(409, "uniqueness")
    text, _ = await status(core, "initech")
    assert "3 users pushed but no groups: in Okta, push groups" in text

    for name, members in (("Engineering", ids[:2]), ("Sales", ids[2:]), ("Empty", [])):
        body = {
            "schemas": [GROUP_URN],
            "displayName": name,
            "members": [{"value": m} for m in members],
        }
        assert (await scim.post("/Groups", body)).status == 201
    # a second, revoked token the customer's old app still uses
    old = await admin_stub.IssueScimToken(
        apb.IssueScimTokenRequest(organization="initech", description="old app"), metadata=ADMIN
    )
    await admin_stub.RevokeScimToken(
        apb.RevokeScimTokenRequest(organization="initech", token_id=old.token.id), metadata=ADMIN
    )
    await asyncio.sleep(tokens.AUTH_CACHE_SECONDS + 0.1)
    (await scim.as_token(old.secret).get("/Users")).assert_error(401)
    await client.app[ACTIVITY].flush()

    text, data = await status(core, "initech")
    assert (
        "3 groups pushed, none mapped: all 3 users have the default role 'member'. "
        'Map with `wando admin roles map --org initech --group "Engineering" --role ROLE`.'
    ) in text
    assert "1 requests failed with 401 in the last 24 h" in text
    assert "users: 3 active, 0 inactive; groups: 3" in text
    assert "groups with members, not mapped: Engineering (2), Sales (1)" in text
    revoked, live = data["tokens"]  # newest first
    assert revoked["token"]["id"] == old.token.id and revoked["unauthorized_24h"] == 1
    assert live["client"] == "okta" and live["requests_24h"] == 7 and live["errors_24h"] == 1
    assert live["last_error"]["status"] == 409
    assert live["last_error"]["scim_type"] == "uniqueness"
    assert "last error: " in text and '409 uniqueness "' in text

    env = {"WANDO_CORE": f"127.0.0.1:{core.port}", "WANDO_ADMIN_TOKEN": ADMIN_TOKEN}
    code, _, err = await run_wando(
        "admin",
        "roles",
        "map",
        "--org",
        "initech",
        "--group",
        "Engineering",
        "--role",
        "admin",
        env=env,
    )
    assert code == 0, err
    text, data = await status(core, "initech")
    assert "none mapped" not in text and "mapped groups: Engineering → admin" in text
    assert data["default_role_users"] == 1  # cy, in Sales only


async def test_each_tokens_latest_request_and_failure_across_chunks(
    core: CoreServer, admin_stub: agrpc.AdminServiceStub, pool: asyncpg.Pool
) -> None:
    """The latest request and the latest failure are the newest by time, in
    whichever chunk they are (a chunk stored later may hold older requests:
    several gateways); a tie goes to the one stored last."""
    await admin_stub.CreateOrganization(
        apb.CreateOrganizationRequest(slug="umbrella"), metadata=ADMIN
    )
    issued = await admin_stub.IssueScimToken(
        apb.IssueScimTokenRequest(organization="umbrella"), metadata=ADMIN
    )
    t0 = time.time() // 60 * 60 - 120  # two minutes ago, each batch within one minute
    stored_first = [(10, "Auth0-Action/1.0", 409), (50, "Okta SCIM Client 1.0.0", 200)]
    stored_last = [(20, "Microsoft.Identity", 200), (40, "Azure AD", 404), (50, "curl/8", 200)]
    async with pool.acquire() as conn:
        for batch in (stored_first, stored_last):
            kept = gateway_activity.Kept()
            for n, (at, agent, status) in enumerate(batch):
                kept.append(
                    (
                        issued.secret,
                        t0 + at,
                        f"r{at}-{n}",
                        agent,
                        "GET",
                        "/Users",
                        "",
                        "",
                        status,
                        "",
                        "",
                        0.001,
                    )
                )
            columns = gateway_activity.plain_columns(kept, tokens.hash_secret)
            assert await activity.store(conn, columns) == len(batch)
        org = await conn.fetchrow("SELECT * FROM organizations WHERE slug = 'umbrella'")
        answer = await organization_status.status(conn, org)
    (token,) = answer.tokens
    assert token.client == "other"  # curl's, at 50 s like Okta's, stored last
    assert token.last_error.status == 404 and token.last_error.client == "entra"
    assert token.last_error.request_time.ToSeconds() == int(t0 + 40)
