"""The gateway's HTTP behaviour that needs no stored resources: discovery, auth,
unknown paths and methods, bodies, content types, rate limits, request ids and
an unreachable core. Real HTTP, real gRPC, the real core on real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.gateway.support import (
    BASE,
    ENTERPRISE_URN,
    GROUP_URN,
    SCIM_JSON,
    USER_URN,
    Reply,
    ScimHttp,
    gateway,
    gateway_settings,
    okta_user,
)
from tests.support import ADMIN, free_port
from wando.provisioning.v1 import admin_service_pb2 as admin_pb
from wando.provisioning.v1 import admin_service_pb2_grpc

# each test that reaches the core through the gateway, over gRPC and in-process
GATEWAY_CORES = ("grpc", "local")

OKTA_SPEC_FILTER = "/Users?filter=userName%20eq%20%22ABCDEFGH%40ATKO.COM%22"

# discovery


@pytest.mark.parametrize("token", [None, "garbage", "wando_scim_unknown"])
async def test_service_provider_config_is_honest_and_public(
    client: TestClient[Any, Any], token: str | None
) -> None:
    reply = await ScimHttp(client, token).get("/ServiceProviderConfig")
    assert reply.status == 200 and reply.headers["Content-Type"] == SCIM_JSON
    config = reply.body
    assert config["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]
    assert config["patch"] == {"supported": True}
    assert config["bulk"] == {"supported": True, "maxOperations": 100, "maxPayloadSize": 1048576}
    assert config["filter"] == {"supported": True, "maxResults": 1000}
    assert config["changePassword"] == {"supported": False}
    assert config["sort"] == {"supported": True}
    assert config["etag"] == {"supported": True}
    assert config["pagination"] == {
        "cursor": True,
        "index": True,
        "defaultPaginationMethod": "index",
        "defaultPageSize": 100,
        "maxPageSize": 1000,
        "cursorTimeout": 3600,
    }
    (scheme,) = config["authenticationSchemes"]
    assert scheme["type"] == "oauthbearertoken" and scheme["name"] and scheme["description"]
    assert config["meta"] == {
        "resourceType": "ServiceProviderConfig",
        "location": f"{BASE}/ServiceProviderConfig",
    }


async def test_resource_types(anonymous: ScimHttp) -> None:
    reply = await anonymous.get("/ResourceTypes")
    types = {t["name"]: t for t in reply.assert_list()}
    assert reply.body["totalResults"] == 2
    assert types["User"]["endpoint"] == "/Users" and types["User"]["schema"] == USER_URN
    assert types["User"]["schemaExtensions"] == [{"schema": ENTERPRISE_URN, "required": False}]
    assert types["Group"]["endpoint"] == "/Groups" and types["Group"]["schema"] == GROUP_URN
    for name in ("User", "Group"):
        one = await anonymous.get(f"/ResourceTypes/{name}")
        assert one.status == 200 and one.body == types[name]
        assert one.body["meta"]["location"] == f"{BASE}/ResourceTypes/{name}"
    (await anonymous.get("/ResourceTypes/Widget")).assert_error(404)


async def test_schemas_come_from_scim2_models(anonymous: ScimHttp) -> None:
    reply = await anonymous.get("/Schemas")
    schemas = {s["id"]: s for s in reply.assert_list()}
    assert set(schemas) == {USER_URN, ENTERPRISE_URN, GROUP_URN}
    user = {a["name"]: a for a in schemas[USER_URN]["attributes"]}
    assert user["userName"]["uniqueness"] == "server" and user["userName"]["required"]
    assert user["password"]["returned"] == "never"
    assert "members" in {a["name"] for a in schemas[GROUP_URN]["attributes"]}
    one = await anonymous.get(f"/Schemas/{ENTERPRISE_URN}")
    assert one.status == 200 and one.body == schemas[ENTERPRISE_URN]
    assert one.body["meta"] == {
        "resourceType": "Schema",
        "location": f"{BASE}/Schemas/{ENTERPRISE_URN}",
    }
    (await anonymous.get("/Schemas/urn:example:nothing")).assert_error(404)


@pytest.mark.parametrize("path", ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas"])
async def test_discovery_refuses_filters(anonymous: ScimHttp, path: str) -> None:
    (await anonymous.get(f'{path}?filter=name%20eq%20"User"')).assert_error(403)


# authentication


async def test_missing_token_is_401(anonymous: ScimHttp) -> None:
    reply = await anonymous.get("/Users?startIndex=1&count=2")
    reply.assert_error(401)
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="wando-scim"'


@pytest.mark.parametrize(
    "header",
    [
        "non-token",  # Okta's SPEC test, step 11
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer    ",
        "Token abc",
        "Bearer two words",
        "Bearer tök€n",
    ],
)
async def test_malformed_authorization_is_401(anonymous: ScimHttp, header: str) -> None:
    reply = await anonymous.get(OKTA_SPEC_FILTER, headers={"Authorization": header})
    reply.assert_error(401)
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="wando-scim"'


async def test_unknown_and_admin_tokens_are_refused_by_the_core(anonymous: ScimHttp) -> None:
    for token in ("wando_scim_" + "A" * 49, "wando_admin_test-credential-for-the-suite"):
        reply = await anonymous.as_token(token).get("/Users")
        detail = reply.assert_error(401)
        assert token not in detail
        assert reply.headers["WWW-Authenticate"] == 'Bearer realm="wando-scim"'


async def test_revoked_token_is_401(
    scim: ScimHttp, admin_stub: admin_service_pb2_grpc.AdminServiceStub
) -> None:
    issued = await admin_stub.IssueScimToken(
        admin_pb.IssueScimTokenRequest(organization="initech"), metadata=ADMIN
    )
    second = scim.as_token(issued.secret)
    assert (await second.get("/Users")).status == 200
    await admin_stub.RevokeScimToken(
        admin_pb.RevokeScimTokenRequest(organization="initech", token_id=issued.token.id),
        metadata=ADMIN,
    )
    for _ in range(50):  # "stops working within a second" (README)
        reply = await second.get("/Users")
        if reply.status != 200:
            break
        await asyncio.sleep(0.1)
    reply.assert_error(401)
    assert (await scim.get("/Users")).status == 200  # the organisation's other token


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_scheme_is_case_insensitive(scim: ScimHttp, scheme: str) -> None:
    reply = await scim.as_token(None).get(
        "/Users?startIndex=1&count=2", headers={"Authorization": f"{scheme} {scim.token}"}
    )
    assert reply.status == 200, reply.text


async def test_tokens_never_reach_the_logs(
    scim: ScimHttp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert scim.token
    await scim.get('/Users?filter=userName%20eq%20"secret.person%40x.example"')
    await scim.post("/Users", okta_user("logged@x.example"))
    await scim.as_token(scim.token + "x").get("/Users")
    await scim.as_token(None).get("/Users", headers={"Authorization": scim.token})
    text = "\n".join(r.getMessage() + json.dumps(getattr(r, "fields", {})) for r in caplog.records)
    assert scim.token not in text
    assert "1mz050nq" not in text  # Okta's placeholder password
    assert "secret.person" not in text  # query strings stay out of the access log
    access = [r for r in caplog.records if r.name == "gateway.access"]
    assert [r.fields["status"] for r in access] == [200, 201, 401, 401]  # type: ignore[attr-defined]
    assert access[0].getMessage().startswith("GET /api/auth/scim/v2/Users 200 ")


# paths and methods


@pytest.mark.parametrize(
    "path", ["/api/auth/scim/v2/Nothing", "/api/auth/scim/v2/Users/u-1/extra", "/elsewhere", "/"]
)
async def test_unknown_paths_are_scim_404(client: TestClient[Any, Any], path: str) -> None:
    async with client.get(path) as r:
        reply = Reply(r.status, r.headers, await r.json(content_type=None), "")
    reply.assert_error(404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/Users", {"GET", "HEAD", "POST"}),
        ("PUT", "/Groups", {"GET", "HEAD", "POST"}),
        ("POST", "/Users/u-1", {"GET", "HEAD", "PUT", "PATCH", "DELETE"}),
        ("PUT", "/ServiceProviderConfig", {"GET", "HEAD"}),
        ("DELETE", "/Schemas", {"GET", "HEAD"}),
        ("OPTIONS", "/ResourceTypes", {"GET", "HEAD"}),
    ],
)
async def test_other_methods_are_405(
    scim: ScimHttp, method: str, path: str, allowed: set[str]
) -> None:
    reply = await scim.request(method, path)
    reply.assert_error(405)
    assert set(reply.headers["Allow"].split(", ")) == allowed


# bodies


async def test_bodies_over_the_limit_are_413(core_env: dict[str, str]) -> None:
    settings = gateway_settings(**core_env, WANDO_MAX_BODY_BYTES="2048")
    async with gateway(settings) as client:
        http = ScimHttp(client, "wando_scim_whatever")
        big = okta_user("big@x.example", title="x" * 4000)
        (await http.post("/Users", big)).assert_error(413)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            data = json.dumps(big).encode()
            for i in range(0, len(data), 512):
                yield data[i : i + 512]

        reply = await http.request(
            "PUT", "/Users/u-1", data=chunks(), headers={"Content-Type": "application/json"}
        )
        reply.assert_error(413)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{not json",
        b"[]",
        b'"a string"',
        b'{"userName": NaN}',
        b'{"a":' * 100 + b"1" + b"}" * 100,
        b'{"userName": "\xff"}',
    ],
)
async def test_bodies_that_are_not_a_json_object_are_invalid_syntax(
    scim: ScimHttp, data: bytes
) -> None:
    for method, path in (("POST", "/Users"), ("PUT", "/Users/u-1"), ("PATCH", "/Groups/g-1")):
        reply = await scim.request(
            method, path, data=data, headers={"Content-Type": "application/scim+json"}
        )
        reply.assert_error(400, "invalidSyntax")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/scim+json; charset=utf-8",
        "application/scim+json",
        "application/json",
        "application/json; charset=UTF-8",
        "text/plain",
        None,
    ],
)
async def test_json_is_parsed_whatever_the_content_type(
    scim: ScimHttp, content_type: str | None
) -> None:
    body = okta_user(f"ct.{abs(hash(content_type))}@x.example")
    reply = await scim.request(
        "POST",
        "/Users",
        data=json.dumps(body).encode(),
        headers={"Content-Type": content_type},
    )
    assert reply.status == 201, reply.text
    assert reply.headers["Content-Type"] == SCIM_JSON


# rate limiting


async def test_rate_limit_is_429_with_retry_after(
    core_env: dict[str, str], admin_stub: admin_service_pb2_grpc.AdminServiceStub
) -> None:
    from tests.support import new_org_with_token

    _, first = await new_org_with_token(admin_stub, "busy")
    _, second = await new_org_with_token(admin_stub, "quiet")
    settings = gateway_settings(
        **core_env, WANDO_RATE_LIMIT_PER_SECOND="0.5", WANDO_RATE_LIMIT_BURST="3"
    )
    async with gateway(settings) as client:
        busy = ScimHttp(client, first)
        statuses = [(await busy.get("/Users")).status for _ in range(3)]
        assert statuses == [200, 200, 200]
        reply = await busy.get("/Users")
        reply.assert_error(429)
        assert 1 <= int(reply.headers["Retry-After"]) <= 2
        assert (await ScimHttp(client, second).get("/Users")).status == 200
        assert (await busy.get("/ServiceProviderConfig")).status == 200  # discovery is free


async def test_rate_limit_is_shared_by_all_tokens_of_an_organisation(
    core_env: dict[str, str], admin_stub: admin_service_pb2_grpc.AdminServiceStub
) -> None:
    from tests.support import ADMIN, new_org_with_token
    from wando.provisioning.v1 import admin_service_pb2

    _, first = await new_org_with_token(admin_stub, "rotating")
    second = (
        await admin_stub.IssueScimToken(
            admin_service_pb2.IssueScimTokenRequest(organization="rotating"), metadata=ADMIN
        )
    ).secret
    _, stranger = await new_org_with_token(admin_stub, "stranger")
    settings = gateway_settings(
        **core_env, WANDO_RATE_LIMIT_PER_SECOND="0.5", WANDO_RATE_LIMIT_BURST="4"
    )
    async with gateway(settings) as client:
        # each token's first answer tells the gateway its organisation
        assert (await ScimHttp(client, first).get("/Users")).status == 200
        assert (await ScimHttp(client, second).get("/Users")).status == 200
        # from then on both draw from the organisation's one bucket
        assert (await ScimHttp(client, first).get("/Users")).status == 200
        assert (await ScimHttp(client, second).get("/Users")).status == 200
        (await ScimHttp(client, second).get("/Users")).assert_error(429)
        (await ScimHttp(client, first).get("/Users")).assert_error(429)
        assert (await ScimHttp(client, stranger).get("/Users")).status == 200


async def test_rate_limit_zero_disables_it(core_env: dict[str, str]) -> None:
    settings = gateway_settings(
        **core_env, WANDO_RATE_LIMIT_PER_SECOND="0", WANDO_RATE_LIMIT_BURST="1"
    )
    async with gateway(settings) as client:
        http = ScimHttp(client, "wando_scim_unknown")
        assert {(await http.get("/Users")).status for _ in range(5)} == {401}


# request ids


async def test_request_ids(scim: ScimHttp) -> None:
    reply = await scim.get("/Users", headers={"X-Request-Id": "okta-req-123"})
    assert reply.headers["X-Request-Id"] == "okta-req-123"
    generated = await scim.get("/Nothing", headers={"X-Request-Id": "bad id\twith spaces"})
    assert generated.headers["X-Request-Id"] != "bad id\twith spaces"
    assert len(generated.headers["X-Request-Id"]) == 32


# the core unreachable


async def test_core_down_is_503_with_retry_after_at_once() -> None:
    settings = gateway_settings(f"127.0.0.1:{free_port()}")  # nothing listens there
    async with gateway(settings) as client:
        http = ScimHttp(client, "wando_scim_whatever")
        started = time.monotonic()
        for reply in (
            await http.get("/Users?startIndex=1&count=2"),
            await http.post("/Groups", {"displayName": "x"}),
            await http.delete("/Users/u-1"),
        ):
            reply.assert_error(503)
            assert int(reply.headers["Retry-After"]) >= 1
            assert "127.0.0.1" not in reply.text
        assert time.monotonic() - started < 5
        assert (await http.get("/ServiceProviderConfig")).status == 200


async def test_core_that_never_answers_is_503_within_the_deadline() -> None:
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # accept, then say nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = gateway_settings(f"127.0.0.1:{port}", WANDO_CORE_TIMEOUT_SECONDS="0.5")
    try:
        async with gateway(settings) as client:
            started = time.monotonic()
            reply = await ScimHttp(client, "wando_scim_whatever").get("/Users")
            reply.assert_error(503)
            assert "Retry-After" in reply.headers
            assert time.monotonic() - started < 3
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_base_url_pasted_with_a_trailing_slash_still_works(scim: ScimHttp) -> None:
    """Okta and Entra append "/Users" to the base URL as pasted: with a
    trailing slash that is …/scim/v2//Users, which must not fail the setup."""
    created = await scim.post("//Users", okta_user("slash@initech.example"))
    assert created.status == 201, created.text
    user_id = created.body["id"]
    assert created.body["meta"]["location"].endswith(f"/api/auth/scim/v2/Users/{user_id}")
    found = await scim.get('//Users?filter=userName eq "slash@initech.example"')
    assert [u["id"] for u in found.assert_list()] == [user_id]
    assert (await scim.get(f"//Users/{user_id}")).status == 200
    assert (await scim.get("//ServiceProviderConfig")).status == 200
    (await scim.get("//Users", headers={"Authorization": None})).assert_error(401)


async def test_local_core_past_the_deadline_is_503_and_writes_nothing(
    database_dsn: str, scim: ScimHttp, pool: asyncpg.Pool
) -> None:
    """WANDO_CORE=local: a write stuck behind a lock past WANDO_CORE_TIMEOUT_SECONDS
    is cancelled inside the gateway's process (its transaction rolled back) and
    answered 503, as a core over gRPC past the deadline is."""
    created = await scim.post("/Users", okta_user("stuck@x.example"))
    assert created.status == 201
    user_id = created.body["id"]
    settings = gateway_settings(
        "local",
        WANDO_DATABASE_URL=database_dsn,
        WANDO_CURSOR_SECRET="local-core-cursor-key-for-the-tests",
        WANDO_CORE_TIMEOUT_SECONDS="0.5",
    )
    async with gateway(settings) as client, pool.acquire() as conn:
        stuck = scim.as_client(client)
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE", uuid.UUID(user_id)
            )
            reply = await stuck.put(
                f"/Users/{user_id}", okta_user("stuck@x.example", displayName="Changed")
            )
            reply.assert_error(503)
            assert "Retry-After" in reply.headers
        assert (await stuck.get(f"/Users/{user_id}")).body["displayName"] != "Changed"
        again = await stuck.put(
            f"/Users/{user_id}", okta_user("stuck@x.example", displayName="Changed")
        )
        assert (again.status, again.body["displayName"]) == (200, "Changed")
