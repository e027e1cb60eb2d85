"""SCIM tokens: issued once, stored as a hash, revocable, expiring."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from core import tokens
from tests.support import ADMIN, new_org_with_token
from wando.provisioning.v1 import admin_service_pb2 as pb
from wando.provisioning.v1 import admin_service_pb2_grpc, organization_pb2

Admin = admin_service_pb2_grpc.AdminServiceStub


@pytest.fixture
def admin(channel: grpc.aio.Channel) -> Admin:
    return admin_service_pb2_grpc.AdminServiceStub(channel)


async def authenticate(admin: Admin, secret: str) -> str:
    request = pb.AuthenticateScimTokenRequest(secret=secret)
    return (await admin.AuthenticateScimToken(request, metadata=ADMIN)).organization.slug


async def list_tokens(
    admin: Admin, org: str, show_revoked: bool = False
) -> list[organization_pb2.ScimToken]:
    request = pb.ListScimTokensRequest(organization=org, show_revoked=show_revoked)
    return list((await admin.ListScimTokens(request, metadata=ADMIN)).tokens)


async def revoke(admin: Admin, org: str, token_id: str) -> organization_pb2.ScimToken:
    request = pb.RevokeScimTokenRequest(organization=org, token_id=token_id)
    return (await admin.RevokeScimToken(request, metadata=ADMIN)).token


async def assert_refused(admin: Admin, secret: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await authenticate(admin, secret)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return caught.value.details() or ""


def in_seconds(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC) + timedelta(seconds=seconds))
    return ts


def test_secret_format_is_recognisable_and_checksummed() -> None:
    secret = tokens.new_secret()
    assert secret.startswith("wando_scim_") and len(secret) == tokens.SECRET_LEN
    assert tokens.well_formed(secret)
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert not tokens.well_formed(flipped)
    assert tokens.new_secret() != secret


async def test_issued_token_authenticates_as_its_organisation(admin: Admin) -> None:
    _, secret = await new_org_with_token(admin, "acme")
    await new_org_with_token(admin, "globex")
    assert await authenticate(admin, secret) == "acme"


async def test_only_the_hash_is_stored(admin: Admin, pool: asyncpg.Pool) -> None:
    _, secret = await new_org_with_token(admin, "acme")
    body = secret[len(tokens.PREFIX) + 4 :]
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT token_hash FROM scim_tokens")
        assert stored == hashlib.sha256(secret.encode()).digest()
        # no table anywhere holds the secret's random part, in any column
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for table in tables:
            hits = await conn.fetchval(
                f'SELECT count(*) FROM "{table["tablename"]}" t WHERE row_to_json(t)::text LIKE $1',
                f"%{body[:20]}%",
            )
            assert hits == 0, table["tablename"]
    listed = await list_tokens(admin, "acme")
    assert body[:10] not in str(listed)
    assert listed[0].display_prefix.startswith(secret[:15])


async def test_two_tokens_work_until_one_is_revoked(admin: Admin) -> None:
    _, first = await new_org_with_token(admin, "acme")
    request = pb.IssueScimTokenRequest(organization="acme", description="rotation")
    second = await admin.IssueScimToken(request, metadata=ADMIN)
    assert await authenticate(admin, first) == "acme"
    assert await authenticate(admin, second.secret) == "acme"

    first_id = next(t.id for t in await list_tokens(admin, "acme") if t.id != second.token.id)
    assert (await revoke(admin, "acme", first_id)).HasField("revoke_time")
    await asyncio.sleep(tokens.AUTH_CACHE_SECONDS + 0.1)

    await assert_refused(admin, first)
    assert await authenticate(admin, second.secret) == "acme"
    assert [t.id for t in await list_tokens(admin, "acme")] == [second.token.id]
    assert len(await list_tokens(admin, "acme", show_revoked=True)) == 2


async def test_revoked_expired_unknown_and_malformed_look_the_same(admin: Admin) -> None:
    _, revoked = await new_org_with_token(admin, "acme")
    await revoke(admin, "acme", (await list_tokens(admin, "acme"))[0].id)
    request = pb.IssueScimTokenRequest(organization="acme", expire_time=in_seconds(1))
    expiring = await admin.IssueScimToken(request, metadata=ADMIN)
    assert await authenticate(admin, expiring.secret) == "acme"
    await asyncio.sleep(1.2)

    details = {
        await assert_refused(admin, revoked),
        await assert_refused(admin, expiring.secret),
        await assert_refused(admin, tokens.new_secret()),
        await assert_refused(admin, "wando_scim_not-a-token"),
        await assert_refused(admin, ""),
    }
    assert len(details) == 1  # one message for every reason: nothing to probe with


async def test_expiry_in_the_past_is_refused(admin: Admin) -> None:
    await new_org_with_token(admin, "acme")
    request = pb.IssueScimTokenRequest(organization="acme", expire_time=in_seconds(-60))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.IssueScimToken(request, metadata=ADMIN)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "future" in (caught.value.details() or "")


async def test_last_used_time_is_recorded(admin: Admin) -> None:
    _, secret = await new_org_with_token(admin, "acme")
    assert not (await list_tokens(admin, "acme"))[0].HasField("last_used_time")
    await authenticate(admin, secret)
    assert (await list_tokens(admin, "acme"))[0].HasField("last_used_time")


async def test_revoking_an_unknown_or_foreign_token_is_not_found(admin: Admin) -> None:
    _, acme_secret = await new_org_with_token(admin, "acme")
    await new_org_with_token(admin, "globex")
    globex_token = (await list_tokens(admin, "globex"))[0].id
    for token_id in (globex_token, "00000000-0000-0000-0000-000000000000", "nonsense"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await revoke(admin, "acme", token_id)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await list_tokens(admin, "globex"))[0].id == globex_token
    assert await authenticate(admin, acme_secret) == "acme"
