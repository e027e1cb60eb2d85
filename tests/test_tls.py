"""The core over TLS and mutual TLS (issue #14), with certificates made at test
time: who is served and who is refused, and a certificate rotation while calls
keep coming."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common import channels
from common.channels import ClientTLS
from common.tls import ServerCertificates
from core.server import CoreServer
from tests.support import ADMIN
from tests.tls_support import Leaf, Pki, client, tls_server, write_atomically
from wando.provisioning.v1 import admin_service_pb2 as admin_pb
from wando.provisioning.v1 import admin_service_pb2_grpc

CHECK = health_pb2.HealthCheckRequest()
# a channel of its own per call: a new connection, so a new handshake
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


async def health(port: int, tls_files: ClientTLS | None) -> None:
    """One health check on a connection of its own; raises AioRpcError if refused."""
    async with channels.aio_channel(f"127.0.0.1:{port}", tls_files, OWN_CONNECTION) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(CHECK, timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def refused(port: int, tls_files: ClientTLS | None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health(port, tls_files)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    return caught.value


async def test_a_client_trusting_the_ca_is_served(
    tls_core: CoreServer, server_ca: tuple[trustme.CA, Path]
) -> None:
    async with channels.aio_channel(f"127.0.0.1:{tls_core.port}", client(server_ca[1])) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        created = await stub.CreateOrganization(
            admin_pb.CreateOrganizationRequest(slug="acme"), metadata=ADMIN, timeout=10
        )
        assert created.organization.slug == "acme"


async def test_plaintext_is_refused_on_a_tls_port(tls_core: CoreServer) -> None:
    await refused(tls_core.port, None)


async def test_a_client_trusting_another_ca_is_refused(tls_core: CoreServer, pki: Pki) -> None:
    _, stranger = pki.ca("stranger")
    await refused(tls_core.port, client(stranger))


async def test_mtls_serves_only_clients_with_a_certificate_from_the_client_ca(
    pool: asyncpg.Pool, pki: Pki, server_ca: tuple[trustme.CA, Path], server_leaf: Leaf
) -> None:
    clients_ca, clients_ca_file = pki.ca("clients")
    stranger_ca, _ = pki.ca("stranger")
    server = await tls_server(pool, server_leaf, clients_ca_file)
    try:
        trust = server_ca[1]
        await refused(server.port, client(trust))  # no client certificate
        await refused(server.port, client(trust, pki.leaf(stranger_ca, "intruder", "intruder")))
        await refused(server.port, None)
        await health(server.port, client(trust, pki.leaf(clients_ca, "gateway", "gateway")))
    finally:
        await server.stop(0)


async def test_rotation_under_load_fails_no_call(
    pool: asyncpg.Pool, pki: Pki, server_ca: tuple[trustme.CA, Path], server_leaf: Leaf
) -> None:
    """Replace the certificate and key (from a new CA) while calls run without
    pause: on a connection opened before, and on a new connection per call
    (clients that trust both CAs, as during a real CA rollover). No call fails;
    afterwards new connections get the new certificate."""
    new_ca, new_ca_file = pki.ca("next")
    both = write_atomically(
        pki.dir / "both.pem", server_ca[1].read_bytes() + new_ca_file.read_bytes()
    )
    server = await tls_server(pool, server_leaf)
    address = f"127.0.0.1:{server.port}"
    failures: list[str] = []
    # calls made, by phase and kind; `enough[phase]` is set at 10 of each kind
    calls = {phase: {"kept": 0, "new": 0} for phase in ("before", "after")}
    enough = {phase: asyncio.Event() for phase in calls}
    phase = "before"
    stop = asyncio.Event()

    def count(kind: str) -> None:
        calls[phase][kind] += 1
        if min(calls[phase].values()) >= 10:
            enough[phase].set()

    async def on_kept_connection(channel: grpc.aio.Channel) -> None:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        while not stop.is_set():
            try:
                await stub.ListOrganizations(
                    admin_pb.ListOrganizationsRequest(), metadata=ADMIN, timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                failures.append(f"kept connection: {exc.code().name} {exc.details()}")
            count("kept")

    async def on_new_connections() -> None:
        while not stop.is_set():
            try:
                await health(server.port, client(both))
            except grpc.aio.AioRpcError as exc:
                failures.append(f"new connection: {exc.code().name} {exc.details()}")
            count("new")

    try:
        async with channels.aio_channel(address, client(server_ca[1])) as kept:
            workers = [asyncio.create_task(on_kept_connection(kept)) for _ in range(4)]
            workers += [asyncio.create_task(on_new_connections()) for _ in range(2)]
            try:
                async with asyncio.timeout(120):
                    await enough["before"].wait()
                    server_leaf.replace_with(new_ca)  # certificate first, then key
                    phase = "after"
                    await enough["after"].wait()
            finally:
                stop.set()
                await asyncio.gather(*workers)
        assert failures == []
        await health(server.port, client(new_ca_file))  # new connections: the new certificate
        await refused(server.port, client(server_ca[1]))
    finally:
        stop.set()
        await server.stop(0)


async def test_a_half_rotated_pair_keeps_the_old_certificate(
    tls_core: CoreServer,
    pki: Pki,
    server_ca: tuple[trustme.CA, Path],
    server_leaf: Leaf,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A new certificate whose key has not arrived yet is not served."""
    new_ca, new_ca_file = pki.ca("next")
    fresh = pki.leaf(new_ca, "fresh")
    write_atomically(server_leaf.cert, fresh.cert.read_bytes())
    with caplog.at_level(logging.WARNING, logger="common.tls"):
        await health(tls_core.port, client(server_ca[1]))  # still the old pair
        await health(tls_core.port, client(server_ca[1]))
    warnings = [r.getMessage() for r in caplog.records if r.name == "common.tls"]
    assert len(warnings) == 1 and "keeping the current certificate" in warnings[0]
    assert "do not make a pair" in warnings[0]
    write_atomically(server_leaf.key, fresh.key.read_bytes())
    await health(tls_core.port, client(new_ca_file))
    await refused(tls_core.port, client(server_ca[1]))


def test_reread_makes_the_next_connection_read_the_files_again(server_leaf: Leaf) -> None:
    """What SIGHUP does (common.tls.reread_on_sighup): files that look unchanged are read again."""
    certificates = ServerCertificates(server_leaf.cert, server_leaf.key)
    assert certificates.fetch() is None
    certificates.reread()
    assert certificates.fetch() is not None
    assert certificates.fetch() is None
