"""Credentials on incoming calls.

Every call carries "authorization: Bearer <secret>" as metadata. Which secret
a method accepts depends on its service: AdminService takes the admin
credential, the SCIM services take an organisation's SCIM token. The admin
credential comes from WANDO_ADMIN_TOKEN or, when that is unset, from
<data dir>/admin-token, generated (mode 0600) on first start.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from core.errors import Unauthenticated
from core.rpc import Ctx
from core.tokens import Authenticator, Principal

log = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name
ADMIN_PREFIX = "wando_admin_"


def bearer(context: Ctx) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, secret = value.strip().partition(" ")
            if scheme.lower() == "bearer" and secret.strip():
                return secret.strip()
            return None
    return None


def load_admin_token(configured: str | None, data_dir: Path) -> str:
    """The admin credential: the configured one, else the one kept in the data
    directory, generated there on first use."""
    if configured:
        return configured
    path = data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    token = ADMIN_PREFIX + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    log.info("generated an admin credential in %s (mode 0600)", path)
    return token


def read_admin_token(configured: str | None, data_dir: Path) -> str | None:
    """For clients: the configured credential, else the one in the data directory."""
    if configured:
        return configured
    path = data_dir / ADMIN_TOKEN_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


class Guard:
    """Checks the credential a method needs."""

    def __init__(self, admin_token: str, authenticator: Authenticator) -> None:
        self._admin_token = admin_token.encode()
        self._authenticator = authenticator

    def admin(self, context: Ctx) -> None:
        secret = bearer(context)
        if secret is None or not hmac.compare_digest(secret.encode(), self._admin_token):
            raise Unauthenticated("this method needs the admin credential")

    async def scim(self, context: Ctx) -> Principal:
        secret = bearer(context)
        if secret is None:
            raise Unauthenticated("this method needs an organisation's SCIM bearer token")
        return await self._authenticator.authenticate(secret)
