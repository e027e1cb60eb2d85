"""Configuration from WANDO_* environment variables, read once at start-up.

Every setting has a documented default (README, "Configuration"). A malformed
value stops the process with a message naming the variable; nothing is read at
import time.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SCIM_PREFIX = "/api/auth/scim/v2"
# WANDO_CORE=local: the gateway hosts the core's SCIM services itself (core.local)
LOCAL_CORE = "local"


class ConfigError(Exception):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, name: str, value: str) -> HostPort:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{name} must be HOST:PORT, got {value!r}")
        return cls(host.strip("[]") or "0.0.0.0", int(port))  # noqa: S104 - explicit ':PORT'

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None
    grpc_listen: HostPort
    http_listen: HostPort
    metrics_listen: HostPort | None
    core_address: str
    public_base_url: str
    scim_prefix: str
    admin_token: str | None
    service_token: str | None
    gateway_token: str | None
    log_level: str
    log_format: str
    db_pool_min: int
    db_pool_max: int
    shutdown_grace_seconds: float
    max_body_bytes: int
    rate_limit_per_second: float
    rate_limit_burst: int
    core_timeout_seconds: float
    auth_failure_per_second: float
    auth_failure_burst: int
    cursor_secret: str | None
    cursor_timeout_seconds: int
    bulk_max_operations: int
    bulk_max_payload_bytes: int
    # TLS (common.tls, common.channels): PEM file paths, never their contents
    grpc_tls_cert: Path | None
    grpc_tls_key: Path | None
    grpc_tls_client_ca: Path | None
    grpc_insecure: bool  # plaintext on a non-loopback address, on purpose
    core_tls_ca: Path | None
    core_tls_cert: Path | None
    core_tls_key: Path | None
    core_tls_server_name: str | None
    max_line_bytes: int
    max_header_bytes: int
    max_headers: int
    workers: int
    serve_gateway_core: str  # "local" or "grpc": how `wando serve`'s gateways reach the core
    role_cache_max_entries: int
    role_cache_max_bytes: int
    watch_max_lag: int

    activity: bool
    activity_retention_days: int
    activity_max_per_org: int

    SECRET_FIELDS = (
        "admin_token",
        "service_token",
        "gateway_token",
        "database_url",
        "cursor_secret",
    )

    def redacted(self) -> dict[str, str]:
        """The effective settings as strings, secrets replaced, for the start-up log."""
        out: dict[str, str] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "database_url" and value:
                out[field.name] = _redact_dsn(value)
            elif field.name in self.SECRET_FIELDS and value:
                out[field.name] = "<redacted>"
            else:
                out[field.name] = "" if value is None else str(value)
        return out

    @property
    def core_is_local(self) -> bool:
        """WANDO_CORE=local: the gateway calls the core's services in its own process."""
        return self.core_address == LOCAL_CORE

    @property
    def scim_base_url(self) -> str:
        return self.public_base_url.rstrip("/") + self.scim_prefix


def _redact_dsn(dsn: str) -> str:
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:<redacted>@{host}"


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:  # also refuses nan
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {raw}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")


def _file(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}: no such file {str(path)!r}")
    return path


def _pair(env: Mapping[str, str], cert: str, key: str) -> tuple[Path | None, Path | None]:
    """A certificate and its key: both or neither."""
    pair = _file(env, cert), _file(env, key)
    if (pair[0] is None) != (pair[1] is None):
        raise ConfigError(f"{cert} and {key} go together: set both or neither")
    return pair


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value.lower() not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value.lower()


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wando"


def load(env: Mapping[str, str] | None = None, **overrides: str | None) -> Settings:
    """Build Settings from the environment; keyword overrides (command-line
    flags, by variable name without the WANDO_ prefix, lower-case) win."""
    source = dict(os.environ if env is None else env)
    for key, value in overrides.items():
        if value is not None:
            source[f"WANDO_{key.upper()}"] = value
    grpc_listen = HostPort.parse(
        "WANDO_GRPC_LISTEN", source.get("WANDO_GRPC_LISTEN") or "127.0.0.1:50051"
    )
    http_listen = HostPort.parse(
        "WANDO_HTTP_LISTEN", source.get("WANDO_HTTP_LISTEN") or "127.0.0.1:8080"
    )
    metrics_raw = source.get("WANDO_METRICS_LISTEN", "127.0.0.1:9464")
    metrics_listen = HostPort.parse("WANDO_METRICS_LISTEN", metrics_raw) if metrics_raw else None
    prefix = source.get("WANDO_SCIM_PATH_PREFIX") or DEFAULT_SCIM_PREFIX
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ConfigError(f"WANDO_SCIM_PATH_PREFIX must start and not end with '/', got {prefix!r}")
    public = source.get("WANDO_PUBLIC_BASE_URL") or f"http://{http_listen}"
    if not public.startswith(("http://", "https://")):
        raise ConfigError(f"WANDO_PUBLIC_BASE_URL must be an http(s) URL, got {public!r}")
    pool_min = _int(source, "WANDO_DB_POOL_MIN", 2, 1, 1000)
    pool_max = _int(source, "WANDO_DB_POOL_MAX", 10, 1, 1000)
    if pool_max < pool_min:
        raise ConfigError("WANDO_DB_POOL_MAX must not be below WANDO_DB_POOL_MIN")
    grpc_tls_cert, grpc_tls_key = _pair(source, "WANDO_GRPC_TLS_CERT", "WANDO_GRPC_TLS_KEY")
    grpc_tls_client_ca = _file(source, "WANDO_GRPC_TLS_CLIENT_CA")
    if grpc_tls_client_ca is not None and grpc_tls_cert is None:
        raise ConfigError(
            "WANDO_GRPC_TLS_CLIENT_CA needs WANDO_GRPC_TLS_CERT and WANDO_GRPC_TLS_KEY"
        )
    core_tls_ca = _file(source, "WANDO_CORE_TLS_CA")
    core_tls_cert, core_tls_key = _pair(source, "WANDO_CORE_TLS_CERT", "WANDO_CORE_TLS_KEY")
    core_tls_server_name = source.get("WANDO_CORE_TLS_SERVER_NAME") or None
    if core_tls_server_name and core_tls_ca is None and core_tls_cert is None:
        raise ConfigError(
            "WANDO_CORE_TLS_SERVER_NAME needs WANDO_CORE_TLS_CA (it names the core's certificate)"
        )
    return Settings(
        data_dir=Path(source.get("WANDO_DATA_DIR") or default_data_dir(source)).expanduser(),
        database_url=source.get("WANDO_DATABASE_URL") or None,
        grpc_listen=grpc_listen,
        http_listen=http_listen,
        metrics_listen=metrics_listen,
        core_address=source.get("WANDO_CORE") or str(grpc_listen).replace("0.0.0.0", "127.0.0.1"),  # noqa: S104
        public_base_url=public.rstrip("/"),
        scim_prefix=prefix,
        admin_token=source.get("WANDO_ADMIN_TOKEN") or None,
        service_token=source.get("WANDO_SERVICE_TOKEN") or None,
        gateway_token=source.get("WANDO_GATEWAY_TOKEN") or None,
        log_level=_choice(source, "WANDO_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        log_format=_choice(source, "WANDO_LOG_FORMAT", "text", ("text", "json")),
        db_pool_min=pool_min,
        db_pool_max=pool_max,
        shutdown_grace_seconds=float(_int(source, "WANDO_SHUTDOWN_GRACE_SECONDS", 10, 0, 600)),
        max_body_bytes=_int(source, "WANDO_MAX_BODY_BYTES", 1024 * 1024, 1024, 4 * 1024 * 1024),
        rate_limit_per_second=_float(source, "WANDO_RATE_LIMIT_PER_SECOND", 50.0, 0.0, 1e6),
        rate_limit_burst=_int(source, "WANDO_RATE_LIMIT_BURST", 200, 1, 1_000_000),
        core_timeout_seconds=_float(source, "WANDO_CORE_TIMEOUT_SECONDS", 10.0, 0.1, 300.0),
        auth_failure_per_second=_float(source, "WANDO_AUTH_FAILURE_PER_SECOND", 1.0, 0.0, 1e6),
        auth_failure_burst=_int(source, "WANDO_AUTH_FAILURE_BURST", 20, 1, 1_000_000),
        cursor_secret=source.get("WANDO_CURSOR_SECRET") or None,
        cursor_timeout_seconds=_int(source, "WANDO_CURSOR_TIMEOUT_SECONDS", 3600, 1, 7 * 86400),
        bulk_max_operations=_int(source, "WANDO_BULK_MAX_OPERATIONS", 100, 1, 10_000),
        bulk_max_payload_bytes=_int(
            source, "WANDO_BULK_MAX_PAYLOAD_BYTES", 1024 * 1024, 1024, 4 * 1024 * 1024
        ),
        grpc_tls_cert=grpc_tls_cert,
        grpc_tls_key=grpc_tls_key,
        grpc_tls_client_ca=grpc_tls_client_ca,
        grpc_insecure=_bool(source, "WANDO_GRPC_INSECURE"),
        core_tls_ca=core_tls_ca,
        core_tls_cert=core_tls_cert,
        core_tls_key=core_tls_key,
        core_tls_server_name=core_tls_server_name,
        max_line_bytes=_int(source, "WANDO_MAX_LINE_BYTES", 8192, 1024, 65536),
        max_header_bytes=_int(source, "WANDO_MAX_HEADER_BYTES", 8192, 1024, 65536),
        max_headers=_int(source, "WANDO_MAX_HEADERS", 100, 16, 1000),
        workers=_int(source, "WANDO_WORKERS", os.cpu_count() or 1, 1, 256),
        serve_gateway_core=_choice(source, "WANDO_SERVE_GATEWAY_CORE", "local", ("local", "grpc")),
        role_cache_max_entries=_int(
            source, "WANDO_ROLE_CACHE_MAX_ENTRIES", 100_000, 0, 100_000_000
        ),
        role_cache_max_bytes=_int(
            source, "WANDO_ROLE_CACHE_MAX_BYTES", 128 * 1024 * 1024, 0, 64 * 1024**3
        ),
        watch_max_lag=_int(source, "WANDO_WATCH_MAX_LAG", 100_000, 1, 1_000_000_000),
        activity=_choice(source, "WANDO_ACTIVITY", "on", ("on", "off")) == "on",
        activity_retention_days=_int(source, "WANDO_ACTIVITY_RETENTION_DAYS", 14, 1, 3650),
        activity_max_per_org=_int(
            source, "WANDO_ACTIVITY_MAX_PER_ORG", 1_000_000, 1000, 1_000_000_000
        ),
    )
