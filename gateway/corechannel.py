"""The gateway's one gRPC channel to the core: where it points, how it
balances and what it retries. Every channel the gateway opens to the core is
made by open_channel (transport security belongs here too).

WANDO_CORE takes:
- HOST:PORT: one address (what `wando serve` and a single core use);
- a comma-separated list HOST:PORT,HOST:PORT,…: resolved once at start-up into
  a static list of addresses;
- any gRPC target with a scheme, e.g. dns:///core.internal:50051: every address
  the name resolves to, re-resolved by gRPC when connections fail.
Calls are spread over the addresses with gRPC's own round_robin; reads that
failed with UNAVAILABLE (a core that died or is restarting) are retried on
another connection, up to 3 attempts in all. Writes are never retried: one
that failed with UNAVAILABLE may have been applied, and the client decides
(it gets 503 with Retry-After). The core closes each connection after about
30 s (core.server.MAX_CONNECTION_AGE_MS), so connections spread again over
the core processes sharing a port and over cores added later.
"""

from __future__ import annotations

import ipaddress
import json
import socket

import grpc

from core.config import ConfigError

# Calls that change nothing, so a retry after UNAVAILABLE cannot apply anything twice.
SAFE_TO_RETRY = (
    ("wando.provisioning.v1.UserService", "GetUser"),
    ("wando.provisioning.v1.UserService", "ListUsers"),
    ("wando.provisioning.v1.GroupService", "GetGroup"),
    ("wando.provisioning.v1.GroupService", "ListGroups"),
    ("grpc.health.v1.Health", "Check"),
)

SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": service, "method": method} for service, method in SAFE_TO_RETRY],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}

CHANNEL_OPTIONS = (
    # a large group's membership can exceed gRPC's 4 MiB default
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    # reconnect soon after the core comes back (gRPC's default backoff reaches 2 min)
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
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


def open_channel(core: str) -> grpc.aio.Channel:
    """A channel to the core at WANDO_CORE `core`."""
    return grpc.aio.insecure_channel(target(core), options=CHANNEL_OPTIONS)
