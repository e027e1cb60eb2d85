"""Where a client finds a credential: the configured value, else the file the
core generated in the data directory. A leaf module: the CLI and the gateway
use it without importing the core's server side (asyncpg and all)."""

from __future__ import annotations

from pathlib import Path

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name
SERVICE_TOKEN_FILE = "service-token"  # noqa: S105 - a file name
GATEWAY_TOKEN_FILE = "gateway-token"  # noqa: S105 - a file name


def read_credential(
    configured: str | None, data_dir: Path, name: str = ADMIN_TOKEN_FILE
) -> str | None:
    """The configured credential, else the one in the data directory, else None."""
    if configured:
        return configured
    path = data_dir / name
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
