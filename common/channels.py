"""Channels to the core, for every client of it: the gateway, `wando admin`,
the bench and the tests. One place decides plaintext or TLS (issue #14).

WANDO_CORE_TLS_CA (the CA that signed the core's certificate) switches a
client to TLS; WANDO_CORE_TLS_CERT and WANDO_CORE_TLS_KEY add a client
certificate, for a core that requires one (mTLS). With a client certificate
but no CA, the core's certificate is checked against gRPC's bundled public
roots. WANDO_CORE_TLS_SERVER_NAME is the name to expect in the core's
certificate when the address does not carry it (an IP such as 127.0.0.1).

gRPC has no client credentials that reload, so a client that lives long
(the gateway) watches `ClientTLS.stamp()` and builds a new channel when the
files change (gateway.corechannel).

WANDO_CORE names one core (HOST:PORT), several (a comma-separated list,
resolved once), or any gRPC target with a scheme (dns:///core.internal:50051);
target() turns it into what gRPC dials.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from common import tls
from common.config import ConfigError, Settings

Options = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class ClientTLS:
    ca: Path | None
    cert: Path | None
    key: Path | None
    server_name: str | None

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.ca, self.cert, self.key) if p is not None)

    def stamp(self) -> tls.Stamp:
        return tls.stamp(self.paths)

    def credentials(self) -> grpc.ChannelCredentials:
        """The files read now; tls.TLSFilesError if they cannot be used."""
        if self.ca is not None:
            tls.check_ca(self.ca)
        if self.cert is not None and self.key is not None:
            tls.check_pair(self.cert, self.key)
        return grpc.ssl_channel_credentials(
            root_certificates=tls.read(self.ca) if self.ca is not None else None,
            private_key=tls.read(self.key) if self.key is not None else None,
            certificate_chain=tls.read(self.cert) if self.cert is not None else None,
        )

    def options(self) -> list[tuple[str, Any]]:
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


def client_tls(settings: Settings) -> ClientTLS | None:
    """TLS to the core as WANDO_CORE_TLS_* say, or None for plaintext."""
    if settings.core_tls_ca is None and settings.core_tls_cert is None:
        return None
    return ClientTLS(
        settings.core_tls_ca,
        settings.core_tls_cert,
        settings.core_tls_key,
        settings.core_tls_server_name,
    )


def aio_channel(
    address: str, tls_files: ClientTLS | None, options: Options = ()
) -> grpc.aio.Channel:
    """A grpc.aio channel to the core at WANDO_CORE `address` (see target()):
    TLS if `tls_files`, else plaintext."""
    if tls_files is None:
        return grpc.aio.insecure_channel(target(address), options=list(options))
    return grpc.aio.secure_channel(
        target(address), tls_files.credentials(), options=[*options, *tls_files.options()]
    )


def sync_channel(address: str, tls_files: ClientTLS | None, options: Options = ()) -> grpc.Channel:
    """The same, as a blocking channel (the CLI)."""
    if tls_files is None:
        return grpc.insecure_channel(target(address), options=list(options))
    return grpc.secure_channel(
        target(address), tls_files.credentials(), options=[*options, *tls_files.options()]
    )


def target(core: str) -> str:
    """The gRPC target for WANDO_CORE (see the module's docstring)."""
    core = core.strip()
    if "://" in core or core.startswith(("dns:", "ipv4:", "ipv6:", "unix:")):
        return core
    parts = [p.strip() for p in core.split(",") if p.strip()]
    if len(parts) <= 1:
        return core
    addresses = [address for part in parts for address in _resolve(part)]
    if all(isinstance(ip, ipaddress.IPv4Address) for ip, _ in addresses):
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in addresses)
    if all(isinstance(ip, ipaddress.IPv6Address) for ip, _ in addresses):
        return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in addresses)
    raise ConfigError(f"WANDO_CORE mixes IPv4 and IPv6 addresses: {core!r}")


def _resolve(part: str) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    host, sep, port = part.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"WANDO_CORE entries must be HOST:PORT, got {part!r}")
    host = host.strip("[]")
    try:
        return [(ipaddress.ip_address(host), int(port))]
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"WANDO_CORE: cannot resolve {host!r}: {exc}") from None
    unique = dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found)
    return [(ip, int(port)) for ip in unique]


def in_process(settings: Settings, address: str) -> Settings:
    """Settings for a client inside `wando serve` that reaches its own core at
    `address` (loopback): TLS exactly when that core serves TLS, trusting
    WANDO_CORE_TLS_CA and presenting WANDO_CORE_TLS_CERT, which must then be set."""
    check_in_process(settings)
    if settings.grpc_tls_cert is None:
        return dataclasses.replace(
            settings, core_address=address, core_tls_ca=None, core_tls_cert=None, core_tls_key=None
        )
    return dataclasses.replace(settings, core_address=address)


def check_in_process(settings: Settings) -> None:
    """ConfigError unless a client inside `wando serve` can reach its TLS core."""
    if settings.grpc_tls_cert is None:
        return
    if settings.core_tls_ca is None:
        raise ConfigError(
            "WANDO_GRPC_TLS_CERT is set, so the gateway of `wando serve` reaches the core over "
            "TLS: set WANDO_CORE_TLS_CA to the CA that signed the core's certificate"
        )
    if settings.grpc_tls_client_ca is not None and settings.core_tls_cert is None:
        raise ConfigError(
            "WANDO_GRPC_TLS_CLIENT_CA is set, so the gateway of `wando serve` needs a client "
            "certificate: set WANDO_CORE_TLS_CERT and WANDO_CORE_TLS_KEY"
        )
