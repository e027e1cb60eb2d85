"""Drill: secrets (issue #8, item 6).

Already proven elsewhere, and not repeated here:
- tokens are stored only as SHA-256 hashes, no table holds a secret
  (tests/test_tokens.py::test_only_the_hash_is_stored);
- AdminService.AuthenticateScimToken answers revoked, expired, unknown and
  malformed tokens with one message
  (tests/test_tokens.py::test_revoked_expired_unknown_and_malformed_look_the_same);
- every AdminService method refuses SCIM tokens, and every SCIM method the admin
  credential (tests/test_admin_auth.py);
- the gateway's log lines of one request flow hold no token, password or query
  string (tests/gateway/test_http.py::test_tokens_never_reach_the_logs).

Added here: the same indistinguishability at the two doors a customer and an
attacker actually use (the SCIM HTTP API and the SCIM RPCs), the timing of
authentication, the throttling of repeated failures (gateway.authlimit), the
session-wide log scan (tests/drills/logscan.py) proving it can see, and the
service credential's inability to write anything.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import time
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
from aiohttp.test_utils import TestClient
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY

from common import config
from common.wirejson import dumps
from core import tokens
from core.server import CoreServer
from gateway.authlimit import AuthFailures
from tests.drills import logscan, snapshot
from tests.drills.report import heavy, report
from tests.gateway.support import PREFIX, Reply, ScimHttp, gateway, gateway_settings
from tests.scim_client import Scim, okta_user, ops
from tests.support import ADMIN, ADMIN_TOKEN, SERVICE, bearer, new_org_with_token, run_wando
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import admin_service_pb2_grpc, roles_pb2
from wando.provisioning.v1 import group_service_pb2 as gpb
from wando.provisioning.v1 import group_service_pb2_grpc as ggrpc
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import role_service_pb2_grpc as rgrpc
from wando.provisioning.v1 import user_service_pb2 as upb
from wando.provisioning.v1 import user_service_pb2_grpc as ugrpc

Admin = admin_service_pb2_grpc.AdminServiceStub
# headers that differ between any two replies, whatever they answer
PER_REPLY_HEADERS = {"date", "x-request-id"}


def in_seconds(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(int((time.time() + seconds) * 1000))
    return stamp


async def refused_tokens(admin: Admin) -> dict[str, str]:
    """An unknown, a revoked and an expired token of organisation "acme" (which
    also keeps one live token, so the organisation itself is real)."""
    await new_org_with_token(admin, "acme")
    revoked = await admin.IssueScimToken(
        apb.IssueScimTokenRequest(organization="acme"), metadata=ADMIN
    )
    await admin.RevokeScimToken(
        apb.RevokeScimTokenRequest(organization="acme", token_id=revoked.token.id), metadata=ADMIN
    )
    expiring = await admin.IssueScimToken(
        apb.IssueScimTokenRequest(organization="acme", expire_time=in_seconds(1)), metadata=ADMIN
    )
    await asyncio.sleep(1.3)
    return {"unknown": tokens.new_secret(), "revoked": revoked.secret, "expired": expiring.secret}


def comparable(reply: Reply) -> tuple[int, str, list[tuple[str, str]]]:
    headers = sorted((k, v) for k, v in reply.headers.items() if k.lower() not in PER_REPLY_HEADERS)
    return reply.status, reply.text, headers


# (b) unknown, revoked and expired tokens are indistinguishable


async def test_unknown_revoked_and_expired_tokens_get_the_same_http_answer(
    core: CoreServer, admin_stub: Admin
) -> None:
    refused = await refused_tokens(admin_stub)
    async with gateway(gateway_settings(f"127.0.0.1:{core.port}")) as client:
        for path in ("/Users", "/Groups/00000000-0000-0000-0000-000000000000"):
            replies = {
                kind: comparable(await ScimHttp(client, token).get(path))
                for kind, token in refused.items()
            }
            assert replies["unknown"][0] == 401, replies
            assert replies["revoked"] == replies["unknown"], path
            assert replies["expired"] == replies["unknown"], path
    report("secrets.refused_tokens_http", kinds=sorted(refused), identical=True)


async def test_unknown_revoked_and_expired_tokens_get_the_same_rpc_answer(
    channel: grpc.aio.Channel, admin_stub: Admin
) -> None:
    refused = await refused_tokens(admin_stub)
    users, groups = ugrpc.UserServiceStub(channel), ggrpc.GroupServiceStub(channel)
    calls = {
        "ListUsers": lambda md: users.ListUsers(upb.ListUsersRequest(), metadata=md),
        "DeleteGroup": lambda md: groups.DeleteGroup(gpb.DeleteGroupRequest(id="x"), metadata=md),
    }
    for name, call in calls.items():
        answers = {}
        for kind, token in refused.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(bearer(token))
            error = caught.value
            answers[kind] = (error.code(), error.details(), tuple(error.trailing_metadata() or ()))
        assert answers["unknown"][0] == grpc.StatusCode.UNAUTHENTICATED
        assert answers["revoked"] == answers["unknown"] == answers["expired"], name


# (c) timing


def look_alike(secret: str, keep: int) -> str:
    """A well-formed token (valid checksum, so it reaches the database) that
    shares its first `keep` random characters with `secret`."""
    body = secret[len(tokens.PREFIX) : -6]
    while True:
        tail = "".join(random.choice(tokens._ALPHABET) for _ in range(len(body) - keep))
        guess = body[:keep] + tail
        if guess != body:
            return tokens.PREFIX + guess + tokens._checksum(guess)


async def test_authentication_time_does_not_depend_on_a_matching_prefix(
    channel: grpc.aio.Channel, admin_stub: Admin
) -> None:
    """core.tokens looks a secret up by the SHA-256 of the whole secret: no
    index, column or comparison ever sees a prefix, so a guess that shares 40 of
    43 random characters with a real token costs the same as one that shares
    none. Measured over the SCIM RPC an attacker would use: both kinds are
    interleaved in random order (so CPU contention hits both alike), and the
    medians must agree within a factor of 2 — a lookup keyed by prefix would
    show up as a consistent gap, contention as noise in both."""
    _, real = await new_org_with_token(admin_stub, "acme")
    users = ugrpc.UserServiceStub(channel)
    samples = 3000 if heavy() else 300
    keep = len(real) - len(tokens.PREFIX) - 6 - 3
    times: dict[str, list[float]] = {"unknown": [], "shared_prefix": [], "bad_checksum": []}

    async def timed(kind: str, secret: str) -> None:
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await users.ListUsers(upb.ListUsersRequest(), metadata=bearer(secret))
        times[kind].append(time.perf_counter() - started)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    for _ in range(20):  # warm up the channel and the pool
        await timed("unknown", tokens.new_secret())
    times["unknown"].clear()
    for _ in range(samples):
        kinds = [
            ("unknown", tokens.new_secret()),
            ("shared_prefix", look_alike(real, keep)),
            ("bad_checksum", real[:-1] + ("A" if real[-1] != "A" else "B")),
        ]
        random.shuffle(kinds)
        for kind, secret in kinds:
            await timed(kind, secret)
    medians = {kind: statistics.median(values) * 1e6 for kind, values in times.items()}
    ratio = medians["shared_prefix"] / medians["unknown"]
    report(
        "secrets.auth_timing",
        samples_each=samples,
        shared_chars=keep,
        median_us={k: round(v, 1) for k, v in medians.items()},
        shared_over_unknown=round(ratio, 3),
        bad_checksum_over_unknown=round(medians["bad_checksum"] / medians["unknown"], 3),
    )
    assert 0.5 <= ratio <= 2.0, medians


# (d) repeated failed authentication is throttled


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_auth_failures_burst_then_rate_per_address() -> None:
    clock = Clock()
    failures = AuthFailures(2.0, 3, clock)
    assert failures.wait("a", None) == 0
    for _ in range(3):
        failures.failed("a", "guess")
    assert failures.wait("a", "another-guess") == 1
    assert failures.wait("b", "guess") == 0  # other addresses are not touched
    clock.now += 0.5
    assert failures.wait("a", "guess") == 0  # one failure's worth refilled
    for _ in range(10):  # let through together, all failed: the address pays for each
        failures.failed("a", "guess")
    assert failures.wait("a", None) == 2  # overdrawn to -burst at most: (1 + 3) / 2


def test_tokens_the_core_accepted_never_wait_until_they_fail() -> None:
    failures = AuthFailures(1.0, 1, Clock())
    failures.vouch("good")
    failures.failed("a", "guess")
    assert failures.wait("a", "good") == 0
    assert failures.wait("a", "good2") == 1
    failures.failed("a", "good")  # revoked since: no longer vouched for
    assert failures.wait("a", "good") == 2


def test_auth_failure_settings() -> None:
    defaults = config.load(env={})
    assert (defaults.auth_failure_burst, defaults.auth_failure_per_second) == (20, 1.0)
    assert not AuthFailures(0.0, 1).enabled
    for name, value in (("WANDO_AUTH_FAILURE_BURST", "0"), ("WANDO_AUTH_FAILURE_PER_SECOND", "-1")):
        with pytest.raises(config.ConfigError, match=name):
            config.load(env={name: value})


def core_calls() -> float:
    """RPCs the core has answered so far (its Prometheus counter)."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "wando_grpc_requests"
        for sample in family.samples
        if sample.name == "wando_grpc_requests_total"
    )


async def get_from(client: TestClient[Any, Any], local_host: str, token: str) -> int:
    """GET /Users from another loopback address (Linux routes all of 127/8)."""
    connector = aiohttp.TCPConnector(local_addr=(local_host, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        url = client.make_url(PREFIX + "/Users")
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as reply:
            return reply.status


async def test_repeated_failed_authentication_gets_429_before_reaching_the_core(
    core: CoreServer, admin_stub: Admin
) -> None:
    _, okta = await new_org_with_token(admin_stub, "acme")
    _, fresh = await new_org_with_token(admin_stub, "globex")
    _, elsewhere = await new_org_with_token(admin_stub, "initech")
    settings = gateway_settings(
        f"127.0.0.1:{core.port}", WANDO_AUTH_FAILURE_BURST="5", WANDO_AUTH_FAILURE_PER_SECOND="2"
    )
    async with gateway(settings) as client:
        assert (await ScimHttp(client, okta).get("/Users")).status == 200  # vouched for
        guesses = [ScimHttp(client, tokens.new_secret()) for _ in range(8)]
        statuses = [(await guess.get("/Users")).status for guess in guesses[:5]]
        assert statuses == [401] * 5
        before = core_calls()
        reply = await guesses[5].get("/Users")
        reply.assert_error(429)
        assert reply.headers["Retry-After"] == "1"
        assert "failed authentications" in reply.body["detail"]
        (await guesses[6].get("/Users", headers={"Authorization": None})).assert_error(429)
        reached_core = core_calls() - before
        assert reached_core == 0  # refused before the core was asked
        # a token the core accepted from here still works; a never-seen one waits its turn
        assert (await ScimHttp(client, okta).get("/Users")).status == 200
        (await ScimHttp(client, fresh).get("/Users")).assert_error(429)
        # another address is not touched, even with a token never seen before
        assert await get_from(client, "127.0.0.2", elsewhere) == 200
        # discovery needs no token and is never throttled
        assert (await guesses[7].get("/ServiceProviderConfig")).status == 200
        await asyncio.sleep(1.1)
        assert (await ScimHttp(client, fresh).get("/Users")).status == 200
    report(
        "secrets.auth_failure_limit",
        burst=5,
        per_second=2,
        retry_after_s=1,
        throttled_calls_reaching_core=reached_core,
    )


async def test_default_auth_failure_limit_leaves_an_identity_providers_retries_alone(
    core: CoreServer, admin_stub: Admin
) -> None:
    """An IdP retrying a revoked token gets 401s up to the default burst, then
    429s, while the organisation's live token keeps working at full speed."""
    _, live = await new_org_with_token(admin_stub, "acme")
    revoked = await admin_stub.IssueScimToken(
        apb.IssueScimTokenRequest(organization="acme"), metadata=ADMIN
    )
    async with gateway(gateway_settings(f"127.0.0.1:{core.port}")) as client:
        assert (await ScimHttp(client, live).get("/Users")).status == 200
        assert (await ScimHttp(client, revoked.secret).get("/Users")).status == 200
        await admin_stub.RevokeScimToken(
            apb.RevokeScimTokenRequest(organization="acme", token_id=revoked.token.id),
            metadata=ADMIN,
        )
        await asyncio.sleep(tokens.AUTH_CACHE_SECONDS + 0.1)
        retrying = ScimHttp(client, revoked.secret)
        started = time.monotonic()
        statuses = [(await retrying.get("/Users")).status for _ in range(40)]
        elapsed = time.monotonic() - started
        live_statuses = {(await ScimHttp(client, live).get("/Users")).status for _ in range(50)}
    # the bucket refills at 1/s while the 40 requests run: that many more 401s at most
    assert statuses[:20] == [401] * 20 and set(statuses) == {401, 429}, statuses
    assert statuses.count(401) <= 20 + int(elapsed) + 1, (elapsed, statuses)
    assert live_statuses == {200}
    report(
        "secrets.default_auth_failure_limit",
        unauthorized=statuses.count(401),
        throttled=statuses.count(429),
        seconds=round(elapsed, 2),
    )


# (e) the session-wide log scan sees what it must


FAKE_TOKEN = tokens.new_secret()  # never issued


def test_the_log_scan_is_installed_for_the_whole_session() -> None:
    scanner = logscan.active()
    assert scanner in logging.getLogger().handlers
    for name in ("core.tokens", "gateway.access", "wando"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.DEBUG, name


def test_the_log_scan_catches_secrets_in_messages_fields_and_tracebacks() -> None:
    scanner = logscan.active()
    with scanner.expecting() as caught:
        logging.getLogger("core.auth").debug("checking %s", FAKE_TOKEN)
        logging.getLogger("gateway").info("headers: %s", {"Authorization": "Basic dXNlcjpwYXNz"})
        logging.getLogger("gateway.access").info(
            "GET /Users 200", extra={"fields": {"auth": "bearer abcdefghijklmnopqrstuvwxyz"}}
        )
        try:
            raise ValueError("password was 1mz050nq")
        except ValueError:
            logging.getLogger("core.instrumentation").exception("unexpected error")
        logging.getLogger("wando").warning("configured with %s", ADMIN_TOKEN)
        logging.getLogger("common.tls").info("read -----BEGIN EC PRIVATE KEY-----\nMHcCAQEE")
    kinds = sorted({finding.what for finding in caught})
    report("secrets.logscan_selftest", caught=len(caught), kinds=kinds)
    assert kinds == sorted(
        {
            "SCIM token",
            "Authorization header",
            "Bearer token",
            "a test password",
            "the test ADMIN credential",
            "admin/service/gateway credential",
            "private key",
        }
    ), caught


def test_the_log_scan_lets_ordinary_lines_through() -> None:
    lines = [
        'WWW-Authenticate: Bearer realm="wando-scim"',
        "401: the bearer token is malformed",
        "core refused the bearer token: the bearer token is missing, malformed, unknown, "
        "expired or revoked",
        "send the SCIM token issued by Wando as 'Authorization: Bearer <token>'",
        "token prefix wando_scim_AbCd…",
        "GET /api/auth/scim/v2/Users 401 3.1ms",
    ]
    assert logscan.scan_text("\n".join(lines), "test") == []


async def test_the_log_scan_reads_wando_subprocess_stderr() -> None:
    with logscan.active().expecting() as caught:
        code, _, err = await run_wando("admin", "org", "show", "acme", f"--bogus={FAKE_TOKEN}")
    assert code != 0 and FAKE_TOKEN in err  # argparse echoes the unknown argument
    assert [f.what for f in caught] == ["SCIM token"]
    assert caught[0].source.startswith("stderr of wando admin org")


async def test_a_refused_token_flow_logs_no_secret(core: CoreServer, admin_stub: Admin) -> None:
    """Real traffic through gateway and core with bad, revoked and throttled
    tokens, at DEBUG: the scanner finds nothing (and would have, see above)."""
    refused = await refused_tokens(admin_stub)
    settings = gateway_settings(f"127.0.0.1:{core.port}", WANDO_AUTH_FAILURE_BURST="3")
    scanner = logscan.active()
    lines_before = scanner.lines
    with scanner.expecting() as caught:
        async with gateway(settings) as client:
            for token in [*refused.values(), FAKE_TOKEN, "Basic dXNlcjpwYXNz"]:
                await ScimHttp(client, token).post("/Users", okta_user("x@x.example"))
    assert scanner.lines > lines_before
    assert caught == []


# (f) the service credential reads roles and writes nothing


async def write_calls(channel: grpc.aio.Channel, acme: Scim) -> dict[str, Any]:
    """Every write RPC outside RoleService, with a request that would succeed
    with the right credential."""
    user = await acme.create_user(okta_user("kept@acme.example"))
    group = await acme.create_group({"displayName": "Kept", "members": [{"value": user["id"]}]})
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    token_id = (
        (await admin.ListScimTokens(apb.ListScimTokensRequest(organization="acme"), metadata=ADMIN))
        .tokens[0]
        .id
    )
    users, groups = ugrpc.UserServiceStub(channel), ggrpc.GroupServiceStub(channel)
    body = dumps(okta_user("made@acme.example"))
    patch = ops({"op": "replace", "path": "active", "value": False})
    admin_role = roles_pb2.ROLE_ADMIN
    return {
        "CreateOrganization": (admin, apb.CreateOrganizationRequest(slug="made-by-svc")),
        "IssueScimToken": (admin, apb.IssueScimTokenRequest(organization="acme")),
        "RevokeScimToken": (
            admin,
            apb.RevokeScimTokenRequest(organization="acme", token_id=token_id),
        ),
        "SetGroupRole": (
            admin,
            apb.SetGroupRoleRequest(organization="acme", group="Kept", role=admin_role),
        ),
        "ClearGroupRole": (admin, apb.ClearGroupRoleRequest(organization="acme", group="Kept")),
        "SetDefaultRole": (
            admin,
            apb.SetDefaultRoleRequest(organization="acme", role=roles_pb2.ROLE_BOSS),
        ),
        "CreateUser": (users, upb.CreateUserRequest(user_json=body)),
        "ReplaceUser": (users, upb.ReplaceUserRequest(id=user["id"], user_json=body)),
        "PatchUser": (users, upb.PatchUserRequest(id=user["id"], operations=patch)),
        "DeleteUser": (users, upb.DeleteUserRequest(id=user["id"])),
        "CreateGroup": (groups, gpb.CreateGroupRequest(group_json=dumps({"displayName": "New"}))),
        "ReplaceGroup": (
            groups,
            gpb.ReplaceGroupRequest(id=group["id"], group_json=dumps({"displayName": "Renamed"})),
        ),
        "PatchGroup": (
            groups,
            gpb.PatchGroupRequest(
                id=group["id"], operations=ops({"op": "remove", "path": "members"})
            ),
        ),
        "DeleteGroup": (groups, gpb.DeleteGroupRequest(id=group["id"])),
    }


async def test_the_service_credential_cannot_write(
    channel: grpc.aio.Channel, acme: Scim, pool: asyncpg.Pool
) -> None:
    calls = await write_calls(channel, acme)
    org_id = await pool.fetchval("SELECT org_id FROM organizations WHERE slug = 'acme'")
    before = await snapshot.org_rows(pool, org_id)
    orgs_before = await pool.fetchval("SELECT count(*) FROM organizations")
    refused = {}
    for name, (stub, request) in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stub, name)(request, metadata=SERVICE)
        refused[name] = caught.value.code().name
    assert set(refused.values()) <= {"UNAUTHENTICATED", "PERMISSION_DENIED"}, refused
    assert await snapshot.org_rows(pool, org_id) == before
    assert await pool.fetchval("SELECT count(*) FROM organizations") == orgs_before
    # the same requests do work with the right credentials, so the refusals above mean something
    user_id = calls["PatchUser"][1].id
    patched = await acme.patch_user(user_id, {"op": "replace", "path": "active", "value": False})
    assert patched["active"] is False
    report("secrets.service_credential_writes", refused=len(refused))


def test_role_service_has_only_reads() -> None:
    """A tripwire: a write RPC added to RoleService would be reachable with the
    service credential, which README promises can write nothing."""
    methods = rpb.DESCRIPTOR.services_by_name["RoleService"].methods
    writes = [
        m.name for m in methods if not m.name.startswith(("Get", "BatchGet", "List", "Watch"))
    ]
    assert writes == []


async def test_every_role_service_method_refuses_scim_and_admin_credentials(
    channel: grpc.aio.Channel, admin_stub: Admin
) -> None:
    _, scim_secret = await new_org_with_token(admin_stub, "acme")
    stub = rgrpc.RoleServiceStub(channel)
    service = rpb.DESCRIPTOR.services_by_name["RoleService"]
    for method in service.methods:
        request = getattr(rpb, method.input_type.name)(organization="acme")
        for metadata in (bearer(scim_secret), ADMIN, bearer(scim_secret + "x")):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                call = getattr(stub, method.name)(request, metadata=metadata)
                if method.server_streaming:
                    async for _ in call:
                        pass
                else:
                    await call
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, method.name
