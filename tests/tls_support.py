"""Real certificates made at test time (trustme), written as PEM files the way
an operator's secret store writes them: whole files, replaced by rename."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import trustme

from common.channels import ClientTLS
from common.tls import ServerCertificates
from core.server import CoreServer, start_server
from tests.support import ADMIN_TOKEN, SERVICE_TOKEN

SERVER_NAMES = ("localhost", "127.0.0.1")


def write_atomically(path: Path, data: bytes) -> Path:
    """Replace `path` in one step: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


@dataclass
class Leaf:
    """A certificate and its key, as files."""

    cert: Path
    key: Path

    def replace_with(self, ca: trustme.CA, *names: str) -> None:
        """Rotate: a new key and certificate from `ca`, key file last (the
        order an operator's copy may take; the core must not serve a mismatch)."""
        new = ca.issue_cert(*(names or SERVER_NAMES))
        write_atomically(self.cert, b"".join(blob.bytes() for blob in new.cert_chain_pems))
        write_atomically(self.key, new.private_key_pem.bytes())


class Pki:
    """CAs and leaves under one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def ca(self, name: str) -> tuple[trustme.CA, Path]:
        ca = trustme.CA(organization_name=f"Wando test {name}")
        return ca, write_atomically(self.dir / f"{name}-ca.pem", ca.cert_pem.bytes())

    def leaf(self, ca: trustme.CA, name: str, *names: str) -> Leaf:
        leaf = Leaf(self.dir / f"{name}.pem", self.dir / f"{name}-key.pem")
        leaf.replace_with(ca, *(names or SERVER_NAMES))
        return leaf


def client(ca: Path | None, leaf: Leaf | None = None) -> ClientTLS:
    return ClientTLS(ca, leaf.cert if leaf else None, leaf.key if leaf else None, None)


async def tls_server(pool: asyncpg.Pool, leaf: Leaf, client_ca: Path | None = None) -> CoreServer:
    """The core on a free port, over TLS with `leaf` (mTLS with `client_ca`)."""
    certificates = ServerCertificates(leaf.cert, leaf.key, client_ca)
    return await start_server(pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN, tls=certificates)
