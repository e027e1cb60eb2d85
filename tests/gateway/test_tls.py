"""The gateway reaches a TLS core (issue #14), and picks up its own rotated
client certificate and CA with a new channel, dropping no request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
import trustme

from common import channels
from core.server import CoreServer
from gateway import corechannel
from gateway.app import CHANNEL_OPTIONS, resource_calls
from gateway.keys import CORE
from tests.gateway.support import ScimHttp, gateway, gateway_settings, okta_user
from tests.support import new_org_with_token
from tests.tls_support import Leaf, Pki, client, tls_server, write_atomically
from wando.provisioning.v1 import admin_service_pb2_grpc


async def org_token(port: int, tls_files: channels.ClientTLS) -> str:
    async with channels.aio_channel(f"127.0.0.1:{port}", tls_files) as channel:
        _, secret = await new_org_with_token(
            admin_service_pb2_grpc.AdminServiceStub(channel), "initech"
        )
    return secret


async def test_scim_through_the_gateway_to_a_tls_core(
    tls_core: CoreServer, server_ca: tuple[trustme.CA, Path]
) -> None:
    secret = await org_token(tls_core.port, client(server_ca[1]))
    settings = gateway_settings(f"127.0.0.1:{tls_core.port}", WANDO_CORE_TLS_CA=str(server_ca[1]))
    async with gateway(settings) as http:
        scim = ScimHttp(http, secret)
        created = await scim.post("/Users", okta_user("ada@initech.example"))
        assert created.status == 201, created.text
        assert (await scim.get(f"/Users/{created.body['id']}")).status == 200


class MtlsCore:
    """A core requiring client certificates from the CA in `clients_file`."""

    def __init__(self, pki: Pki) -> None:
        self.old_ca, old_file = pki.ca("clients-old")
        self.new_ca, self.new_file = pki.ca("clients-new")
        self.clients_file = write_atomically(pki.dir / "clients.pem", old_file.read_bytes())


@pytest.fixture
async def mtls(pki: Pki) -> MtlsCore:
    return MtlsCore(pki)


@pytest.fixture
async def mtls_core(
    pool: asyncpg.Pool, server_leaf: Leaf, mtls: MtlsCore
) -> AsyncIterator[CoreServer]:
    server = await tls_server(pool, server_leaf, mtls.clients_file)
    yield server
    await server.stop(0)


async def test_the_gateway_renews_its_channel_when_its_certificate_rotates(
    mtls_core: CoreServer,
    mtls: MtlsCore,
    pki: Pki,
    server_ca: tuple[trustme.CA, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SCIM requests run without pause while the core's client CA and the
    gateway's certificate move to a new CA: none fails, and afterwards the
    gateway's requests travel on a new connection made with the new certificate."""
    monkeypatch.setattr(corechannel, "CHECK_SECONDS", 0.05)
    gw = pki.leaf(mtls.old_ca, "gateway", "gateway.wando.internal")
    secret = await org_token(mtls_core.port, client(server_ca[1], gw))
    settings = gateway_settings(
        f"127.0.0.1:{mtls_core.port}",
        WANDO_CORE_TLS_CA=str(server_ca[1]),
        WANDO_CORE_TLS_CERT=str(gw.cert),
        WANDO_CORE_TLS_KEY=str(gw.key),
        WANDO_CORE_TIMEOUT_SECONDS="1",  # the old channel closes 1 s after its renewal
    )
    failures: list[str] = []
    answered = {"before": 0, "after": 0}
    enough = {phase: asyncio.Event() for phase in answered}
    stop = asyncio.Event()
    async with gateway(settings) as http:
        core = http.server.app[CORE]
        scim = ScimHttp(http, secret)

        async def load() -> None:
            while not stop.is_set():
                phase = "after" if core.renewals else "before"
                reply = await scim.get("/Users?count=1")
                if reply.status != 200:
                    failures.append(f"{reply.status} {reply.text[:200]}")
                answered[phase] += 1
                if answered[phase] >= 20:
                    enough[phase].set()

        workers = [asyncio.create_task(load()) for _ in range(4)]
        try:
            async with asyncio.timeout(120):  # a gateway that never renews fails, not hangs
                await enough["before"].wait()
                write_atomically(mtls.clients_file, mtls.new_file.read_bytes())  # the core's side
                gw.replace_with(mtls.new_ca, "gateway.wando.internal")  # the gateway's side
                await enough["after"].wait()
                await core.drained()  # the old channel (old certificate) is closed now
                answered["after"] = 0
                enough["after"].clear()
                await enough["after"].wait()
        finally:
            stop.set()
            await asyncio.gather(*workers)
        assert failures == []
        assert core.renewals == 1
    # the core now refuses the old CA's certificates on new connections
    old = pki.leaf(mtls.old_ca, "old", "old.wando.internal")
    with pytest.raises(grpc.aio.AioRpcError, match="UNAVAILABLE"):
        await org_token(mtls_core.port, client(server_ca[1], old))


async def test_a_half_rotated_client_pair_keeps_the_channel(
    tls_core: CoreServer,
    pki: Pki,
    server_ca: tuple[trustme.CA, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = pki.leaf(server_ca[0], "gateway", "gateway.wando.internal")
    settings = gateway_settings(
        f"127.0.0.1:{tls_core.port}",
        WANDO_CORE_TLS_CA=str(server_ca[1]),
        WANDO_CORE_TLS_CERT=str(gw.cert),
        WANDO_CORE_TLS_KEY=str(gw.key),
    )
    core = corechannel.CoreChannel(settings, resource_calls, CHANNEL_OPTIONS)
    try:
        assert core.renew_if_changed() is False  # nothing changed
        fresh = pki.leaf(server_ca[0], "fresh", "gateway.wando.internal")
        write_atomically(gw.cert, fresh.cert.read_bytes())
        with caplog.at_level(logging.WARNING, logger="gateway.corechannel"):
            assert core.renew_if_changed() is False
            assert core.renew_if_changed() is False
        warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.corechannel"]
        assert len(warnings) == 1 and "do not make a pair" in warnings[0]
        write_atomically(gw.key, fresh.key.read_bytes())
        assert core.renew_if_changed() is True
        assert core.renewals == 1
    finally:
        await core.close()
