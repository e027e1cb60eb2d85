"""Activity (issue #18): what the identity providers' requests leave behind, as
support reads it with `wando admin activity` — through the real gateway, core,
PostgreSQL and CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import grpc
import pytest
from aiohttp.test_utils import TestClient
from google.protobuf.timestamp_pb2 import Timestamp

from common.activity_columns import Columns
from core import activity, tokens
from core.errors import InvalidArgument
from core.server import CoreServer
from gateway import activity as gateway_activity
from gateway.activity import DROPPED, ActivityWriter, Kept, Pending, client_from_user_agent
from gateway.keys import ACTIVITY
from tests.drills import logscan
from tests.gateway import test_auth0, test_entra, test_okta
from tests.gateway.support import GROUP_URN, ScimHttp, gateway, gateway_settings, okta_user
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    GATEWAY,
    SERVICE,
    bearer,
    free_port,
    run_wando,
    serving_grpc,
)
from wando.provisioning.v1 import activity_pb2, activity_pb2_grpc
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import admin_service_pb2_grpc as agrpc

# each test that reaches the core through the gateway, over gRPC and in-process
GATEWAY_CORES = ("grpc", "local")


def env_for(core: CoreServer) -> dict[str, str]:
    return {"WANDO_CORE": f"127.0.0.1:{core.port}", "WANDO_ADMIN_TOKEN": ADMIN_TOKEN}


async def shown(client: TestClient[Any, Any], core: CoreServer, *args: str) -> list[str]:
    """`wando admin activity ARGS` once the gateway has sent what it holds."""
    await client.app[ACTIVITY].flush()
    code, out, err = await run_wando("admin", "activity", *args, env=env_for(core))
    assert code == 0, err
    return out.splitlines()


async def shown_json(client: TestClient[Any, Any], core: CoreServer, *args: str) -> list[Any]:
    await client.app[ACTIVITY].flush()
    code, out, err = await run_wando("admin", "--json", "activity", *args, env=env_for(core))
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


async def test_a_failed_okta_push_as_support_sees_it(
    client: TestClient[Any, Any],
    core: CoreServer,
    scim: ScimHttp,
    admin_stub: agrpc.AdminServiceStub,
) -> None:
    ada = "ada@initech.example"
    (await scim.get(f'/Users?filter=userName eq "{ada}"')).assert_list()
    created = await scim.post("/Users", okta_user(ada))
    assert created.status == 201
    uid = created.body["id"]
    (await scim.post("/Users", okta_user(ada))).assert_error(409, "uniqueness")
    bad_json = await scim.request("POST", "/Users", data=b"{not json", headers={})
    bad_json.assert_error(400, "invalidSyntax")
    missing = str(uuid.uuid4())
    (await scim.get(f"/Users/{missing}")).assert_error(404)
    group = await scim.post("/Groups", {"schemas": [GROUP_URN], "displayName": "Staff"})
    gid = group.body["id"]
    nobody = str(uuid.uuid4())
    patch = await scim.patch(
        f"/Groups/{gid}", {"op": "add", "path": "members", "value": [{"value": nobody}]}
    )
    detail = patch.assert_error(400, "invalidValue")
    listed = await admin_stub.ListScimTokens(
        apb.ListScimTokensRequest(organization="initech"), metadata=ADMIN
    )
    token_id = listed.tokens[0].id
    await admin_stub.RevokeScimToken(
        apb.RevokeScimTokenRequest(organization="initech", token_id=token_id), metadata=ADMIN
    )
    await asyncio.sleep(tokens.AUTH_CACHE_SECONDS + 0.1)  # the gateway's core forgets it
    (await scim.get("/Users")).assert_error(401)

    lines = await shown(client, core, "--org", "initech")
    assert len(lines) == 8, "\n".join(lines)
    okta = [line.split(" ", 1)[1] for line in lines]  # without the time
    assert okta[0].startswith(f'okta GET /Users 200 filter: userName eq "{ada}" (')
    assert okta[1].startswith(f"okta POST /Users {uid[:3]}… 201 (")
    assert okta[2].startswith('okta POST /Users 409 uniqueness "')
    assert okta[3].startswith('okta POST /Users 400 invalidSyntax "')
    assert okta[4].startswith(f"okta GET /Users/{{id}} {missing[:3]}… 404 ")
    assert okta[6].startswith(f'okta PATCH /Groups/{{id}} {gid[:3]}… 400 invalidValue "{detail}"')
    assert okta[7].startswith('okta GET /Users 401 "')  # the revoked token, still initech's

    entries = await shown_json(client, core, "--org", "initech", "--errors")
    assert [e["status"] for e in entries] == [409, 400, 404, 400, 401]
    assert {e["token_id"] for e in entries} == {token_id}
    assert all(
        e["client"] == "okta" and e["user_agent"] == "Okta SCIM Client 1.0.0" for e in entries
    )
    about_ada = await shown_json(client, core, "--org", "initech", "--user", ada)
    # her lookup, her creation, and the conflict whose detail names her
    assert [(e["method"], e["status"]) for e in about_ada] == [
        ("GET", 200),
        ("POST", 201),
        ("POST", 409),
    ]
    by_id = await shown_json(client, core, "--org", "initech", "--user", uid)
    assert [(e["method"], e["status"]) for e in by_id] == [("POST", 201)]
    assert len(await shown(client, core, "--org", "initech", "--status", "404")) == 1
    assert len(await shown(client, core, "--org", "initech", "--limit", "2")) == 2
    assert len(await shown(client, core, "--org", "initech", "--since", "1h")) == 8


async def test_the_replays_leave_activity(
    client: TestClient[Any, Any], core: CoreServer, scim: ScimHttp
) -> None:
    """Okta's SPEC test, Entra's validator checks and Auth0's lifecycle, one
    after another on one organisation: every request with a bearer token is
    there, named by client, with its failures."""
    await test_okta.test_okta_spec_test(scim)
    entries = await shown_json(client, core, "--org", "initech", "--limit", "1000")
    # 12 requests carried the token (step 11 sends "non-token", no Bearer)
    assert len(entries) == 12
    assert [e["status"] for e in entries if e["status"] >= 400] == [404, 409, 404]
    assert {e.get("client") for e in entries} == {"okta", "other"}  # step 6 sends no UA
    conflict = next(e for e in entries if e["status"] == 409)
    assert conflict["scim_type"] == "uniqueness" and conflict["route"] == "/Users"

    await test_entra.test_validator_checks(scim)
    await test_auth0.test_auth0_user_lifecycle(scim)
    after = await shown_json(client, core, "--org", "initech", "--limit", "1000")
    assert len(after) > len(entries)
    assert all(e["route"] in ("/Users", "/Users/{id}", "/Groups", "/Groups/{id}") for e in after)
    filters = [e["filter"] for e in after if e.get("filter")]
    assert any(f.startswith("externalId eq ") for f in filters)  # Auth0's correlation


async def test_one_organisation_never_sees_another(
    client: TestClient[Any, Any],
    core: CoreServer,
    scim: ScimHttp,
    other: ScimHttp,
    channel: grpc.aio.Channel,
) -> None:
    await scim.get("/Users")
    await other.get("/Groups")
    await other.get("/Groups")
    mine = await shown_json(client, core, "--org", "initech")
    theirs = await shown_json(client, core, "--org", "umbrella")
    assert [e["route"] for e in mine] == ["/Users"]
    assert [e["route"] for e in theirs] == ["/Groups", "/Groups"]
    assert {e["organization_id"] for e in mine}.isdisjoint(e["organization_id"] for e in theirs)

    # only the admin credential reads activity; only the gateway's records it
    admin = agrpc.AdminServiceStub(channel)
    request = apb.ListActivityRequest(organization="initech")
    for credential in (bearer(scim.token or ""), SERVICE, GATEWAY):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.ListActivity(request, metadata=credential)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    record = activity_pb2_grpc.ActivityServiceStub(channel)
    for credential in (bearer(scim.token or ""), SERVICE, ADMIN):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await record.RecordActivity(activity_pb2.RecordActivityRequest(), metadata=credential)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_tokens_and_no_token_leave_nothing(
    client: TestClient[Any, Any], core: CoreServer, scim: ScimHttp, pool: asyncpg.Pool
) -> None:
    (await scim.as_token(tokens.new_secret()).get("/Users")).assert_error(401)
    (await scim.as_token(None).get("/Users")).assert_error(401)
    await scim.get("/ServiceProviderConfig")  # discovery: no organisation's request
    await client.app[ACTIVITY].flush()
    assert await pool.fetchval("SELECT count(*) FROM activity") == 0


async def test_no_secret_or_password_is_kept(
    client: TestClient[Any, Any], core: CoreServer, scim: ScimHttp, pool: asyncpg.Pool
) -> None:
    """Bodies (with Okta's password) are never kept; a token pasted into a
    filter or a User-Agent, or a filter naming password, is withheld."""
    await scim.post("/Users", okta_user("bob@initech.example"))
    await scim.get(f'/Users?filter=userName eq "{scim.token}"')
    await scim.get('/Users?filter=password eq "1mz050nq"')
    await scim.get("/Users", headers={"User-Agent": f"curl Bearer {scim.token}"})
    await scim.request("POST", "/Users", data=b'{"password": "hunter22", oops', headers={})
    await client.app[ACTIVITY].flush()
    rows = await pool.fetch("SELECT row_to_json(a)::text AS j FROM activity a")
    assert len(rows) == 5
    text = "\n".join(r["j"] for r in rows)
    assert logscan.scan_text(text, "the activity table") == []
    assert (scim.token or "-") not in text and activity.WITHHELD in text


def entry_at(when: datetime, secret: str, status: int = 200) -> activity_pb2.RecordedRequest:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return activity_pb2.RecordedRequest(
        token_sha256=tokens.hash_secret(secret),
        entry=activity_pb2.ActivityEntry(
            request_time=stamp, method="GET", route="/Users", status=status, client="okta"
        ),
    )


async def test_retention_and_the_per_organisation_cap(
    core: CoreServer,
    channel: grpc.aio.Channel,
    admin_stub: agrpc.AdminServiceStub,
    pool: asyncpg.Pool,
) -> None:
    issued = {}
    for slug in ("initech", "umbrella"):
        await admin_stub.CreateOrganization(
            apb.CreateOrganizationRequest(slug=slug), metadata=ADMIN
        )
        issued[slug] = (
            await admin_stub.IssueScimToken(
                apb.IssueScimTokenRequest(organization=slug), metadata=ADMIN
            )
        ).secret
    record = activity_pb2_grpc.ActivityServiceStub(channel)
    now = datetime.now(UTC)
    old = [entry_at(now - timedelta(days=20, minutes=i), issued["initech"]) for i in range(30)]
    new = [entry_at(now - timedelta(minutes=i), issued["initech"]) for i in range(30)]
    theirs = [entry_at(now - timedelta(minutes=i), issued["umbrella"]) for i in range(5)]
    answer = await record.RecordActivity(
        activity_pb2.RecordActivityRequest(requests=old + new + theirs), metadata=GATEWAY
    )
    assert answer.recorded == 65

    # another replica pruning meanwhile (it holds the lock): this one skips its round
    async with pool.acquire() as other:
        assert await other.fetchval(activity.TRY_PRUNE_LOCK)
        assert await activity.prune(pool, timedelta(days=14), max_per_org=1000) == 0
        assert await other.fetchval(activity.PRUNE_UNLOCK)
    assert await pool.fetchval("SELECT count(*) FROM activity") == 65
    deleted = await activity.prune(pool, timedelta(days=14), max_per_org=1000, batch=7)
    assert deleted == 30  # the 20-day-old ones, seven at a time
    deleted = await activity.prune(pool, timedelta(days=14), max_per_org=10, batch=7)
    assert deleted == 20  # initech's oldest beyond its cap; umbrella is under it
    page = await admin_stub.ListActivity(
        apb.ListActivityRequest(organization="initech", page_size=100), metadata=ADMIN
    )
    kept = [e.request_time.ToDatetime(tzinfo=UTC) for e in page.entries]
    assert len(kept) == 10 and kept == sorted(kept, reverse=True)
    assert min(kept) > now - timedelta(minutes=10, seconds=1)  # the newest ten remain
    count = await pool.fetchval("SELECT count(*) FROM activity")
    assert count == 15
    # each organisation's count, kept by the inserts and the deletes, is its rows
    # (what the pruner reads to find an organisation over its cap)
    counted = await pool.fetch("SELECT org_id, entries FROM activity_counts ORDER BY 1")
    actual = await pool.fetch("SELECT org_id, count(*) FROM activity GROUP BY 1 ORDER BY 1")
    assert [tuple(r) for r in counted] == [tuple(r) for r in actual]
    assert sorted(r["entries"] for r in counted) == [5, 10]

    # a prune that fails midway does not keep the lock from the next one: its
    # session is ended, and PostgreSQL lets the lock go as the backend exits
    # (a moment after the client closed the connection)
    with pytest.raises(asyncpg.PostgresError):
        await activity.prune(pool, timedelta(days=14), max_per_org=10, batch=-1)  # LIMIT -1
    async with pool.acquire() as other:
        for _ in range(200):  # 10 s
            if await other.fetchval(activity.TRY_PRUNE_LOCK):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the failed pruner's session still holds the lock")
        assert await other.fetchval(activity.PRUNE_UNLOCK)


async def test_a_searchs_filter_is_its_bodys(
    client: TestClient[Any, Any], core: CoreServer, scim: ScimHttp
) -> None:
    """POST …/.search carries its filter in the body; a GET in its query (a
    search's query is kept only if its body has no filter)."""
    search = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}
    ada = {**search, "filter": 'userName eq "ada"'}
    (await scim.post("/Users/.search", ada)).assert_list()
    (await scim.post("/.search", {**search, "filter": 'displayName eq "Staff"'})).assert_list()
    (await scim.post("/Users/.search?filter=ignored", search)).assert_list()
    (await scim.get('/Groups?filter=displayName eq "Staff"')).assert_list()
    assert (await scim.post("/Users", okta_user("bob@initech.example"))).status == 201
    entries = await shown_json(client, core, "--org", "initech")
    assert [(e["method"], e["route"], e.get("filter", "")) for e in entries] == [
        ("POST", "/Users/.search", 'userName eq "ada"'),
        ("POST", "/.search", 'displayName eq "Staff"'),
        ("POST", "/Users/.search", "ignored"),
        ("GET", "/Groups", 'displayName eq "Staff"'),
        ("POST", "/Users", ""),
    ]


async def test_paging_newest_first(
    core: CoreServer,
    channel: grpc.aio.Channel,
    admin_stub: agrpc.AdminServiceStub,
) -> None:
    await admin_stub.CreateOrganization(
        apb.CreateOrganizationRequest(slug="initech"), metadata=ADMIN
    )
    secret = (
        await admin_stub.IssueScimToken(
            apb.IssueScimTokenRequest(organization="initech"), metadata=ADMIN
        )
    ).secret
    now = datetime.now(UTC)
    batch = [entry_at(now - timedelta(seconds=i), secret, 200 + i % 2 * 200) for i in range(25)]
    await activity_pb2_grpc.ActivityServiceStub(channel).RecordActivity(
        activity_pb2.RecordActivityRequest(requests=batch), metadata=GATEWAY
    )
    seen: list[datetime] = []
    token = ""
    while True:
        page = await admin_stub.ListActivity(
            apb.ListActivityRequest(organization="initech", page_size=10, page_token=token),
            metadata=ADMIN,
        )
        seen.extend(e.request_time.ToDatetime(tzinfo=UTC) for e in page.entries)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 25 and seen == sorted(seen, reverse=True)
    errors = await admin_stub.ListActivity(
        apb.ListActivityRequest(
            organization="initech", filter=apb.ActivityFilter(errors_only=True), page_size=100
        ),
        metadata=ADMIN,
    )
    assert len(errors.entries) == 12 and {e.status for e in errors.entries} == {400}
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await admin_stub.ListActivity(
            apb.ListActivityRequest(organization="initech", page_token="garbage"), metadata=ADMIN
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_paging_across_chunks_that_overlap_in_time(
    core: CoreServer,
    channel: grpc.aio.Channel,
    admin_stub: agrpc.AdminServiceStub,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each batch is stored as one chunk an organisation a minute; batches
    from several gateways overlap in time, and one cut off from the core sends
    an hour-old backlog late. Paging newest first still gives every entry once,
    in order, whichever chunk holds it, with filters and a time range."""
    monkeypatch.setattr(activity, "PAGE_CHUNKS", 1)  # the fewest chunks each read
    secret = await issue_token(admin_stub, "initech")
    record = activity_pb2_grpc.ActivityServiceStub(channel)
    now = datetime.now(UTC).replace(second=30)
    # two gateways' batches, interleaved in time; then a backlog an hour old,
    # across two minutes (two chunks); then a batch with a failure
    batches = [
        [now - timedelta(seconds=s) for s in range(0, 20, 2)],
        [now - timedelta(seconds=s) for s in range(1, 20, 2)],
        [now - timedelta(hours=1, seconds=s) for s in range(0, 60, 5)],
        [now - timedelta(seconds=10.5)],
    ]
    for n, times in enumerate(batches):
        status = 500 if n == 3 else 200
        requests = [entry_at(t, secret, status) for t in times]
        await record.RecordActivity(
            activity_pb2.RecordActivityRequest(requests=requests), metadata=GATEWAY
        )
    assert await pool.fetchval("SELECT count(*) FROM activity_chunks") == 5

    async def listed(page_size: int, **request: Any) -> list[activity_pb2.ActivityEntry]:
        seen: list[activity_pb2.ActivityEntry] = []
        token = ""
        while True:
            page = await admin_stub.ListActivity(
                apb.ListActivityRequest(
                    organization="initech", page_size=page_size, page_token=token, **request
                ),
                metadata=ADMIN,
            )
            seen.extend(page.entries)
            token = page.next_page_token
            if not token:
                return seen

    every = sorted((t for times in batches for t in times), reverse=True)
    for page_size in (1, 3, 7, 100):
        seen = await listed(page_size)
        assert [e.request_time.ToDatetime(tzinfo=UTC) for e in seen] == every
        assert len({e.id for e in seen}) == len(every)
    failed = await listed(2, filter=apb.ActivityFilter(errors_only=True))
    assert [e.status for e in failed] == [500]
    since, before = Timestamp(), Timestamp()
    since.FromDatetime(now - timedelta(hours=1, seconds=22))
    before.FromDatetime(now - timedelta(hours=1, seconds=2))
    hour_ago = await listed(2, start_time=since, end_time=before)
    assert [e.request_time.ToDatetime(tzinfo=UTC) for e in hour_ago] == [
        now - timedelta(hours=1, seconds=s) for s in (5, 10, 15, 20)
    ]


async def test_watch_streams_new_requests(
    client: TestClient[Any, Any],
    core: CoreServer,
    scim: ScimHttp,
    admin_stub: agrpc.AdminServiceStub,
) -> None:
    stream = admin_stub.WatchActivity(
        apb.WatchActivityRequest(
            organization="initech", filter=apb.ActivityFilter(errors_only=True)
        ),
        metadata=ADMIN,
    )
    try:
        await asyncio.sleep(activity.WATCH_POLL_SECONDS)  # the stream is set up
        await scim.get("/Users")
        (await scim.get(f"/Users/{uuid.uuid4()}")).assert_error(404)
        await client.app[ACTIVITY].flush()
        first = await asyncio.wait_for(stream.read(), timeout=60)
        assert first.entry.status == 404 and first.entry.route == "/Users/{id}"
    finally:
        stream.cancel()


async def issue_token(admin_stub: agrpc.AdminServiceStub, slug: str) -> str:
    await admin_stub.CreateOrganization(apb.CreateOrganizationRequest(slug=slug), metadata=ADMIN)
    issued = await admin_stub.IssueScimToken(
        apb.IssueScimTokenRequest(organization=slug), metadata=ADMIN
    )
    return issued.secret


async def test_a_watch_streams_a_batch_that_arrives_late(
    core: CoreServer, channel: grpc.aio.Channel, admin_stub: agrpc.AdminServiceStub
) -> None:
    """Entries carry their request's time and reach the core a flush later,
    from several gateways in any order (one cut off from the core for a while
    sends its backlog late): a watch that has streamed newer requests still
    streams them."""
    secret = await issue_token(admin_stub, "initech")
    record = activity_pb2_grpc.ActivityServiceStub(channel)
    now = datetime.now(UTC)
    start = Timestamp()
    start.FromDatetime(now - timedelta(seconds=25))
    stream = admin_stub.WatchActivity(
        apb.WatchActivityRequest(organization="initech", start_time=start), metadata=ADMIN
    )
    try:
        await record.RecordActivity(
            activity_pb2.RecordActivityRequest(requests=[entry_at(now, secret, 201)]),
            metadata=GATEWAY,
        )
        first = await asyncio.wait_for(stream.read(), timeout=60)
        assert first.entry.status == 201
        await asyncio.sleep(2 * activity.WATCH_POLL_SECONDS)  # the watch moved on
        # from before the watch's start too: it was recorded after
        late = [
            entry_at(now - timedelta(seconds=20), secret, 409),
            entry_at(now - timedelta(hours=1), secret, 404),
        ]
        await record.RecordActivity(
            activity_pb2.RecordActivityRequest(requests=late), metadata=GATEWAY
        )
        streamed = [
            await asyncio.wait_for(stream.read(), timeout=10 * activity.WATCH_POLL_SECONDS)
            for _ in late
        ]
        assert sorted(s.entry.status for s in streamed) == [404, 409]
        assert first.entry.id not in {s.entry.id for s in streamed}
    finally:
        stream.cancel()


async def test_a_watch_continues_a_listing_without_a_gap(
    core: CoreServer, channel: grpc.aio.Channel, admin_stub: agrpc.AdminServiceStub
) -> None:
    """`--follow` lists, then watches from where the listing stood: what is
    stored in between is streamed, however old its requests, and what was
    listed is not streamed again."""
    secret = await issue_token(admin_stub, "initech")
    record = activity_pb2_grpc.ActivityServiceStub(channel)
    now = datetime.now(UTC)
    await record.RecordActivity(
        activity_pb2.RecordActivityRequest(requests=[entry_at(now, secret, 200)]),
        metadata=GATEWAY,
    )
    listed = await admin_stub.ListActivity(
        apb.ListActivityRequest(organization="initech"), metadata=ADMIN
    )
    assert [e.status for e in listed.entries] == [200] and listed.watch_after > 0
    late = entry_at(now - timedelta(minutes=5), secret, 404)  # stored after the listing
    await record.RecordActivity(
        activity_pb2.RecordActivityRequest(requests=[late]), metadata=GATEWAY
    )
    stream = admin_stub.WatchActivity(
        apb.WatchActivityRequest(organization="initech", after=listed.watch_after),
        metadata=ADMIN,
    )
    try:
        streamed = await asyncio.wait_for(stream.read(), timeout=60)
        assert streamed.entry.status == 404
        await record.RecordActivity(
            activity_pb2.RecordActivityRequest(requests=[entry_at(now, secret, 201)]),
            metadata=GATEWAY,
        )
        streamed = await asyncio.wait_for(stream.read(), timeout=60)
        assert streamed.entry.status == 201
    finally:
        stream.cancel()


async def test_a_batch_in_columns_stores_each_request_as_sent(
    core: CoreServer,
    channel: grpc.aio.Channel,
    admin_stub: agrpc.AdminServiceStub,
    pool: asyncpg.Pool,
) -> None:
    """What the gateway sends: the requests of two organisations, sharing
    tokens, User-Agents and routes, each stored with its own values; a batch
    whose columns do not line up is refused whole."""
    secrets = {slug: await issue_token(admin_stub, slug) for slug in ("initech", "umbrella")}
    now = time.time() // 60 * 60 + 30  # all in one minute: one chunk an organisation
    sent = [
        Pending(
            secrets[slug], now - n, f"r{n}", agent, method, route, rid, flt, status, st, d, 0.002
        )
        for n, (slug, agent, method, route, rid, flt, status, st, d) in enumerate(
            [
                (
                    "initech",
                    "Okta SCIM Client 1.0.0",
                    "GET",
                    "/Users",
                    "",
                    'userName eq "a"',
                    200,
                    "",
                    "",
                ),
                ("umbrella", "curl/8", "GET", "/Users", "", "", 200, "", ""),
                (
                    "initech",
                    "Okta SCIM Client 1.0.0",
                    "POST",
                    "/Users",
                    "u1",
                    "",
                    409,
                    "uniqueness",
                    "taken",
                ),
                ("initech", "curl/8", "GET", "/Users/{id}", "u2", "", 404, "", "no user"),
                ("umbrella", "curl/8", "GET", "/Users", "", "", 200, "", ""),
            ]
        )
    ]
    columns = gateway_activity.columns(sent, tokens.hash_secret)
    record = activity_pb2_grpc.ActivityServiceStub(channel)
    answer = await record.RecordActivity(
        activity_pb2.RecordActivityRequest(columns=columns), metadata=GATEWAY
    )
    assert answer.recorded == 5
    for slug in secrets:
        page = await admin_stub.ListActivity(
            apb.ListActivityRequest(organization=slug), metadata=ADMIN
        )
        stored = [
            (
                e.request_id,
                e.user_agent,
                e.client,
                e.method,
                e.route,
                e.resource_id,
                e.filter,
                e.status,
                e.scim_type,
                e.detail,
                e.latency.ToMicroseconds(),
                e.request_time.ToMicroseconds(),
            )
            for e in page.entries
        ]
        expected = [
            (
                p.request_id,
                p.user_agent,
                client_from_user_agent(p.user_agent),
                p.method,
                p.route,
                p.resource_id,
                p.filter,
                p.status,
                p.scim_type,
                p.detail,
                2000,
                int(p.wall_time * 1e6),
            )
            for p in sent
            if p.token == secrets[slug]
        ]
        assert stored == expected  # newest first, as sent

    bad = activity_pb2.RecordedColumns()
    bad.CopyFrom(columns)
    del bad.status[-1]
    out_of_range = activity_pb2.RecordedColumns()
    out_of_range.CopyFrom(columns)
    out_of_range.token[0] = 7
    for columns in (bad, out_of_range):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await record.RecordActivity(
                activity_pb2.RecordActivityRequest(columns=columns), metadata=GATEWAY
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await pool.fetchval("SELECT count(*) FROM activity") == 5

    # each organisation's part of the batch is one row, its chunk; neither
    # holds the other's requests
    chunks = await pool.fetch(
        "SELECT o.slug, c.entries, c.errors FROM activity_chunks c"
        " JOIN organizations o USING (org_id) ORDER BY o.slug"
    )
    theirs = {slug: [p for p in sent if p.token == secret] for slug, secret in secrets.items()}
    assert [tuple(c) for c in chunks] == [
        (slug, len(theirs[slug]), sum(p.status >= 400 for p in theirs[slug]))
        for slug in sorted(theirs)
    ]


async def test_a_local_gateways_plain_columns_are_stored_as_the_message_is(
    admin_stub: agrpc.AdminServiceStub, pool: asyncpg.Pool
) -> None:
    """A gateway hosting the core (WANDO_CORE=local) hands its batch over as
    plain lists, which protobuf never checked: a lone surrogate is stored as
    the message would carry it, a NUL as elsewhere, and columns that do not
    line up, or name a token the batch does not hold, are refused whole."""
    secret = await issue_token(admin_stub, "initech")
    now = time.time() // 60 * 60 + 30
    kept = Kept()
    kept.append(
        (secret, now, "r0", "Okta", "GET", "/Users", "", 'id eq "\ud800"', 200, "", "", 0.001)
    )
    kept.append(
        (
            secret,
            now + 1,
            "r1",
            "Okta",
            "GET",
            "/Users/{id}",
            "a\x00b",
            "",
            404,
            "",
            "no \udcff",
            0.002,
        )
    )
    plain = gateway_activity.plain_columns(kept, tokens.hash_secret)
    message = gateway_activity.kept_columns(kept, tokens.hash_secret)
    async with pool.acquire() as conn:
        assert await activity.store(conn, plain) == 2
        stored = await conn.fetch(
            "SELECT filter, resource_id, detail, status FROM activity ORDER BY request_time"
        )
        assert [tuple(r) for r in stored] == [
            (message.filter[0], "", "", 200),
            ("", "a\ufffdb", message.detail[1], 404),
        ]
        assert message.filter[0] == 'id eq "?"'
        for broken in (
            plain._replace(status=plain.status[:1]),
            plain._replace(token=[0, -1]),
            plain._replace(user_agent=[0, 1]),
        ):
            with pytest.raises(InvalidArgument):
                await activity.store(conn, broken)
        assert await conn.fetchval("SELECT count(*) FROM activity") == 2


async def test_each_tokens_owner_is_asked_once(
    admin_stub: agrpc.AdminServiceStub, pool: asyncpg.Pool
) -> None:
    """A process asks PostgreSQL about a token the first time one of its
    batches names it; a hash that matches no token again a while later."""
    secret = await issue_token(admin_stub, "initech")
    mine, stranger = tokens.hash_secret(secret), b"s" * 32
    known = activity.Owners()
    asked: list[list[bytes]] = []
    async with pool.acquire() as conn:
        initech = await conn.fetchval("SELECT org_id FROM organizations WHERE slug = 'initech'")

        class Counted:
            async def fetch(self, query: str, hashes: list[bytes]) -> list[asyncpg.Record]:
                asked.append(sorted(hashes))
                return await conn.fetch(query, hashes)

        first = await known.of(Counted(), [mine, stranger, mine])
        assert first[stranger] is None and first[mine] is not None
        assert first[mine][0] == initech
        assert await known.of(Counted(), [stranger, mine]) == first
        assert asked == [sorted([mine, stranger])]
        known._unknown[stranger] = time.monotonic()  # its while is over
        assert await known.of(Counted(), [mine, stranger]) == first
        assert asked == [sorted([mine, stranger]), [stranger]]


def test_plain_columns_are_the_messages_field_for_field() -> None:
    assert Columns._fields == tuple(
        f.name
        for f in sorted(activity_pb2.RecordedColumns.DESCRIPTOR.fields, key=lambda f: f.number)
    )


async def test_the_writer_drops_rather_than_waits(
    core: CoreServer, scim: ScimHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the core away, requests go on; entries beyond the bound are dropped
    and counted."""
    monkeypatch.setattr(gateway_activity, "MAX_PENDING", 10)
    settings = gateway_settings(f"127.0.0.1:{free_port()}")
    async with grpc.aio.insecure_channel(settings.core_address) as channel:
        writer = ActivityWriter(lambda: channel, settings)
        full = DROPPED.labels("queue_full")._value.get()
        failed = DROPPED.labels("send_failed")._value.get()
        pending = Pending("t", 0.0, "r", "", "GET", "/Users", "", "", 200, "", "", 0.001)
        for _ in range(13):
            writer.record(pending)
        assert DROPPED.labels("queue_full")._value.get() - full == 3
        await writer.close()  # the core is unreachable: the batch is dropped, and counted
        assert DROPPED.labels("send_failed")._value.get() - failed == 10
    # and a gateway whose core refuses its activity still answers SCIM requests
    refused = gateway_settings(f"127.0.0.1:{core.port}", WANDO_GATEWAY_TOKEN="wrong")
    async with gateway(refused) as other_client:
        reply = await ScimHttp(other_client, scim.token).get("/Users")
        assert reply.status == 200
        await other_client.app[ACTIVITY].flush()


class FailingLocalCore:
    """A local core whose database refuses the batch, quoting what it refused
    (asyncpg's errors quote the argument)."""

    async def record_activity(self, columns: Columns) -> int:
        raise asyncpg.DataError(f"invalid input for query argument $8: {columns.filter[0]!r}")


async def test_a_batch_the_local_core_refuses_is_dropped_unquoted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    local = FailingLocalCore()
    writer = ActivityWriter(lambda: cast(grpc.aio.Channel, local), gateway_settings("local"))
    failed = DROPPED.labels("send_failed")._value.get()
    secret_filter = 'userName eq "ada@initech.example"'
    writer.record(("t", 0.0, "r", "", "GET", "/Users", "", secret_filter, 200, "", "", 0.001))
    with caplog.at_level(logging.INFO):
        await writer.close()
    assert DROPPED.labels("send_failed")._value.get() - failed == 1
    assert "the local core did not take a batch: DataError" in caplog.text
    assert "ada@" not in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("user_agent", "client"),
    [
        ("Okta SCIM Client 1.0.0", "okta"),
        ("OKTA SCIM Integration", "okta"),
        ("Microsoft.Identity.Provisioning", "entra"),
        ("Azure AD SCIM client", "entra"),
        ("Auth0-Action/1.0", "auth0"),
        ("node-fetch/1.0", "other"),
        ("Mozilla/5.0 (Saadiyat) Oktaeder", "other"),
        ("", "other"),
    ],
)
def test_clients_named_from_user_agent(user_agent: str, client: str) -> None:
    assert client_from_user_agent(user_agent) == client


async def test_follow_lists_then_streams_each_request_once(
    client: TestClient[Any, Any], core: CoreServer, scim: ScimHttp
) -> None:
    await scim.get("/Users")
    await client.app[ACTIVITY].flush()
    follow = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "wando"),
        *("admin", "--json", "activity", "--org", "initech", "--follow"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env_for(core)},
    )
    assert follow.stdout is not None
    try:
        listed = json.loads(await asyncio.wait_for(follow.stdout.readline(), timeout=60))
        assert listed["route"] == "/Users"
        await scim.get("/Groups")
        await client.app[ACTIVITY].flush()
        streamed = json.loads(await asyncio.wait_for(follow.stdout.readline(), timeout=60))
        assert streamed["route"] == "/Groups" and streamed["id"] != listed["id"]
    finally:
        follow.send_signal(signal.SIGINT)
        rest, err = await asyncio.wait_for(follow.communicate(), timeout=60)
    assert follow.returncode == 0, err.decode()
    assert rest == b""  # nothing twice


async def test_batches_stay_large_while_requests_keep_coming(
    core: CoreServer, scim: ScimHttp, pool: asyncpg.Pool
) -> None:
    """Entries that arrive while a batch is on its way wait for the next tick
    (or a full batch): under load, one call carries many entries, not a round
    trip's worth."""
    from core.instrumentation import RPC_COUNT

    calls = RPC_COUNT.labels("/wando.provisioning.v1.ActivityService/RecordActivity", "OK")
    settings = gateway_settings(f"127.0.0.1:{core.port}")
    async with grpc.aio.insecure_channel(settings.core_address) as channel:
        writer = ActivityWriter(lambda: channel, settings)
        before = calls._value.get()
        started = time.monotonic()
        entries = 3000
        for n in range(entries):
            writer.record(
                Pending(
                    scim.token or "",
                    time.time(),
                    f"r{n}",
                    "",
                    "GET",
                    "/Users",
                    "",
                    "",
                    200,
                    "",
                    "",
                    0.001,
                )
            )
            if n % 10 == 0:
                await asyncio.sleep(0.001)  # requests keep coming while batches are sent
        await writer.close()
        ticks = (time.monotonic() - started) / gateway_activity.BATCH_SECONDS
    sent = calls._value.get() - before
    assert sent <= entries / gateway_activity.BATCH_SIZE + ticks + 2, (sent, ticks)
    assert await pool.fetchval("SELECT count(*) FROM activity") == entries


async def test_requests_refused_before_the_core_are_the_organisations_too(
    core_env: dict[str, str], scim: ScimHttp, pool: asyncpg.Pool
) -> None:
    """413 and 429 answer before the core is asked; the entry still names the
    organisation, through the token's hash."""
    settings = gateway_settings(
        **core_env,
        WANDO_MAX_BODY_BYTES="1024",
        WANDO_RATE_LIMIT_BURST="1",
        WANDO_RATE_LIMIT_PER_SECOND="0.01",
    )
    async with gateway(settings) as limited:
        http = ScimHttp(limited, scim.token)
        (await http.post("/Users", okta_user("x@initech.example", title="x" * 2000))).assert_error(
            413
        )
        await http.get("/Users")
        (await http.get("/Users")).assert_error(429)
        await limited.app[ACTIVITY].flush()
    rows = await pool.fetch(
        "SELECT a.status, o.slug FROM activity a JOIN organizations o USING (org_id)"
        " ORDER BY request_time"
    )
    assert [(r["status"], r["slug"]) for r in rows][-3:] == [
        (413, "initech"),
        (200, "initech"),
        (429, "initech"),
    ]


async def test_a_wrong_base_url_shows_as_no_route(
    client: TestClient[Any, Any], core: CoreServer, scim: ScimHttp
) -> None:
    """A customer who pasted a wrong base URL: the 404s are theirs to see."""
    (await scim.get("/v2/Users")).assert_error(404)
    lines = await shown(client, core, "--org", "initech")
    assert len(lines) == 1
    assert (
        lines[0]
        .split(" ", 1)[1]
        .startswith('okta GET (no route) 404 "no SCIM endpoint at /api/auth/scim/v2/v2/Users"')
    )


async def test_hostile_text_in_one_request_loses_no_other_entry(
    client: TestClient[Any, Any], core: CoreServer, scim: ScimHttp, pool: asyncpg.Pool
) -> None:
    """A NUL (which PostgreSQL text refuses) or a lone surrogate (which protobuf
    refuses) in a filter or an id must not cost the batch it travels in."""
    await scim.get("/Users")
    await scim.get("/Users?filter=userName%20eq%20%22a%00b%22")
    await scim.get("/Users?filter=userName%20eq%20%22%ED%A0%80%22")
    await scim.get("/Users/a%00b")
    # the unit separator that a batch's text travels joined with (core.activity)
    await scim.get("/Users?filter=userName%20eq%20%22a%1Fb%22")
    await scim.get("/Users/a%1Fb")
    await scim.get("/Groups")
    await client.app[ACTIVITY].flush()
    rows = await pool.fetch("SELECT route, filter, resource_id FROM activity ORDER BY request_time")
    assert [r["route"] for r in rows] == [
        "/Users",
        "/Users",
        "/Users",
        "/Users/{id}",
        "/Users",
        "/Users/{id}",
        "/Groups",
    ]
    assert all("\x00" not in r["filter"] and "\x1f" not in "".join(r) for r in rows)
    assert rows[4]["filter"] == 'userName eq "a\ufffdb"'
    assert rows[5]["resource_id"] == "a\ufffdb"


def test_an_entry_with_a_lone_surrogate_is_still_sent() -> None:
    pending = Pending("t", 0.0, "r", "", "GET", "/Users", "", 'id eq "\ud800"', 200, "", "", 0.0)
    assert list(gateway_activity.columns([pending], lambda _: b"h" * 32).filter) == ['id eq "?"']


class CoreBeforeColumns(activity_pb2_grpc.ActivityServiceServicer):
    """RecordActivity as a core from before RecordedColumns answers it: it
    reads `requests` only, and never says columns_read."""

    def __init__(self) -> None:
        self.calls: list[activity_pb2.RecordActivityRequest] = []

    async def RecordActivity(
        self, request: activity_pb2.RecordActivityRequest, context: Any
    ) -> activity_pb2.RecordActivityResponse:
        self.calls.append(request)
        return activity_pb2.RecordActivityResponse(recorded=len(request.requests))


async def test_a_core_from_before_columns_gets_the_batch_one_by_one() -> None:
    """A rolling upgrade that reaches the gateways first: the older core ignores
    columns, so the gateway sends the same batch again as one entry each, which
    the older core stores; nothing is dropped."""
    old = CoreBeforeColumns()
    add = activity_pb2_grpc.add_ActivityServiceServicer_to_server
    async with serving_grpc(add, old) as port:
        settings = gateway_settings(f"127.0.0.1:{port}")
        failed = DROPPED.labels("send_failed")._value.get()
        async with grpc.aio.insecure_channel(settings.core_address) as channel:
            writer = ActivityWriter(lambda: channel, settings)
            writer.record(
                Pending(
                    "tok-a",
                    1_700_000_000.25,
                    "req-1",
                    "Okta SCIM Client 1.0.0",
                    "GET",
                    "/Users",
                    "",
                    'userName eq "a@b.example"',
                    200,
                    "",
                    "",
                    0.0042,
                )
            )
            writer.record(
                Pending(
                    "tok-b",
                    1_700_000_001.5,
                    "req-2",
                    "Microsoft.Identity.Provisioning",
                    "PATCH",
                    "/Groups/{id}",
                    "g1",
                    "",
                    400,
                    "invalidValue",
                    "no such user",
                    0.01,
                )
            )
            await writer.close()
        assert DROPPED.labels("send_failed")._value.get() == failed
        first, second = old.calls
        assert len(first.columns.request_id) == 2 and not first.requests
        assert not second.HasField("columns")
        entries = [r.entry for r in second.requests]
        assert [r.token_sha256 for r in second.requests] == [
            hashlib.sha256(b"tok-a").digest(),
            hashlib.sha256(b"tok-b").digest(),
        ]
        assert [(e.request_id, e.client, e.method, e.route, e.status) for e in entries] == [
            ("req-1", "okta", "GET", "/Users", 200),
            ("req-2", "entra", "PATCH", "/Groups/{id}", 400),
        ]
        assert entries[0].filter == 'userName eq "a@b.example"'
        assert (entries[1].resource_id, entries[1].scim_type, entries[1].detail) == (
            "g1",
            "invalidValue",
            "no such user",
        )
        assert entries[0].request_time.ToMicroseconds() == 1_700_000_000_250_000
        assert entries[1].latency.ToMicroseconds() == 10_000


async def test_the_core_says_it_read_the_columns(core: CoreServer) -> None:
    """Today's core answers columns_read, so a gateway sends each batch once."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
        stub = activity_pb2_grpc.ActivityServiceStub(channel)
        columns = gateway_activity.columns(
            [Pending("nobody", 0.0, "r", "", "GET", "/Users", "", "", 200, "", "", 0.0)],
            lambda t: hashlib.sha256(t.encode()).digest(),
        )
        answer = await stub.RecordActivity(
            activity_pb2.RecordActivityRequest(columns=columns), metadata=GATEWAY
        )
        assert answer.columns_read and answer.recorded == 0  # no such token: not stored
        answer = await stub.RecordActivity(activity_pb2.RecordActivityRequest(), metadata=GATEWAY)
        assert not answer.columns_read
