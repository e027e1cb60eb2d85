"""TLS for the core's gRPC port (issue #14): its certificate files, re-read
when they change, and the rule that credentials never cross a network in the
clear by accident.

`ServerCertificates.fetch` is the certificate-configuration fetcher of
`grpc.dynamic_ssl_server_credentials`: gRPC calls it at every new connection's
handshake. It answers None (keep the current pair) unless one of the files'
(mtime, size, inode) changed, and then re-reads them, so a rotation by
overwrite, by atomic rename or by a Kubernetes secret's symlink swap is picked
up by the next connection, without a restart; open connections keep their
session, so calls in flight are not dropped. A new certificate that does not
match its key (a rotation caught half-way), or a file that is not PEM, is not
taken: the old pair keeps serving until the files agree. SIGHUP forces a
re-read. Only paths and OpenSSL's reasons are ever logged, never a key.

`plaintext_allowed(settings)` is the start-up rule: without TLS the core
listens only on a loopback address, unless WANDO_GRPC_INSECURE=1 says
plaintext on the network is meant (then it warns at every start).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc

from common.config import ConfigError, Settings

log = logging.getLogger(__name__)

# per file: (mtime in ns, size, inode), or None while it is missing
Stamp = tuple[tuple[int, int, int] | None, ...]


class TLSFilesError(Exception):
    """Certificate files that cannot be used (missing, not PEM, or a key that
    does not belong to its certificate). The message names paths only."""


def stamp(paths: tuple[Path, ...]) -> Stamp:
    """What tells a rewritten file from the one read before."""
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()  # follows symlinks: a swapped ..data link shows
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _no_password() -> bytes:
    return b""  # gRPC takes no encrypted key; never prompt on a terminal


def check_pair(cert: Path, key: Path) -> None:
    """Raise TLSFilesError unless `key` is the private key of `cert` (PEM)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSFilesError(
                f"{cert} and {key} do not make a pair (key values mismatch)"
            ) from None
        raise TLSFilesError(
            f"{cert} and {key} are not a PEM certificate and its unencrypted key "
            f"({exc.reason or 'PEM lib'})"
        ) from None
    except OSError as exc:
        raise TLSFilesError(f"{cert} or {key}: {exc.strerror}") from None


def check_ca(ca: Path) -> None:
    """Raise TLSFilesError unless `ca` holds at least one PEM certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise TLSFilesError(f"{ca} holds no PEM certificate ({exc.reason})") from None
    except OSError as exc:
        raise TLSFilesError(f"{ca}: {exc.strerror}") from None


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSFilesError(f"{path}: {exc.strerror}") from None


class ServerCertificates:
    """The core's certificate, key and (for mTLS) client CA, as files."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.paths = (cert, key) if client_ca is None else (cert, key, client_ca)
        self._lock = threading.Lock()  # gRPC may call fetch from its own threads
        self._loaded: Stamp | None = None
        self._refused: Stamp | None = None
        self.initial = self._load()  # unusable files stop start-up, loudly

    def _load(self) -> grpc.ServerCertificateConfiguration:
        before = stamp(self.paths)
        check_pair(self.cert, self.key)
        if self.client_ca is not None:
            check_ca(self.client_ca)
        cert, key = read(self.cert), read(self.key)
        client_ca = read(self.client_ca) if self.client_ca is not None else None
        if stamp(self.paths) != before:
            raise TLSFilesError("the certificate files changed while being read")
        self._loaded = before
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher: a new configuration if the files changed, else None."""
        with self._lock:
            now = stamp(self.paths)
            if now == self._loaded:
                return None
            try:
                config = self._load()
            except Exception as exc:  # an exception here would fail the handshake
                if now != self._refused:  # once per state of the files, not per connection
                    self._refused = now
                    why = exc if isinstance(exc, TLSFilesError) else type(exc).__name__
                    log.warning("core gRPC: keeping the current certificate: %s", why)
                return None
            log.info("core gRPC: certificate files re-read; new connections get them")
            return config

    def reread(self) -> None:
        """Make the next connection re-read the files even if they look unchanged (SIGHUP)."""
        with self._lock:
            self._loaded = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial,
            self.fetch,  # type: ignore[arg-type]  # None means "no change" (gRPC's docs)
            require_client_authentication=self.client_ca is not None,
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another name may resolve to anything


def server_certificates(settings: Settings) -> ServerCertificates | None:
    """The core's TLS files from WANDO_GRPC_TLS_*, or None for plaintext, which
    is refused on a non-loopback address unless WANDO_GRPC_INSECURE=1."""
    if settings.grpc_tls_cert is None or settings.grpc_tls_key is None:
        if is_loopback(settings.grpc_listen.host):
            return None
        if not settings.grpc_insecure:
            raise ConfigError(
                f"refusing plaintext gRPC on {settings.grpc_listen}, which is not a loopback "
                "address: set WANDO_GRPC_TLS_CERT and WANDO_GRPC_TLS_KEY, or "
                "WANDO_GRPC_INSECURE=1 if the network is trusted"
            )
        log.warning(
            "WANDO_GRPC_INSECURE=1: core gRPC on %s is PLAINTEXT; SCIM tokens and the admin "
            "and service credentials cross the network in the clear",
            settings.grpc_listen,
        )
        return None
    try:
        files = ServerCertificates(
            settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_tls_client_ca
        )
    except TLSFilesError as exc:
        raise ConfigError(f"WANDO_GRPC_TLS_*: {exc}") from None
    if files.client_ca is None:
        log.warning(
            "core gRPC: TLS without client certificates; set WANDO_GRPC_TLS_CLIENT_CA to "
            "accept only callers holding a certificate from that CA (mTLS)"
        )
    return files


def mode(files: ServerCertificates | None) -> str:
    """How the core's port is served, as its start-up line says it."""
    if files is None:
        return "plaintext"
    return "mTLS" if files.client_ca is not None else "TLS"


@contextlib.contextmanager
def reread_on_sighup(files: ServerCertificates | None) -> Iterator[None]:
    """SIGHUP makes the next connection re-read the certificate files."""
    if files is None:
        yield
        return
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, files.reread)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
