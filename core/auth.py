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

from common.credentials import ADMIN_TOKEN_FILE, GATEWAY_TOKEN_FILE, SERVICE_TOKEN_FILE
from core.errors import Unauthenticated
from core.ratelimit import RateLimits, requested_limit
from core.rpc import Ctx
from core.tokens import Authenticator, Principal

log = logging.getLogger(__name__)

CURSOR_SECRET_FILE = "cursor-secret"  # noqa: S105 - a file name
SERVICE_PREFIX = "wando_svc_"
GATEWAY_PREFIX = "wando_gw_"
ADMIN_PREFIX = "wando_admin_"
CURSOR_PREFIX = "wando_cursor_"


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
    return _load_or_create(configured, data_dir / ADMIN_TOKEN_FILE, ADMIN_PREFIX)


def load_service_token(configured: str | None, data_dir: Path) -> str:
    """The RoleService credential, like the admin one (WANDO_SERVICE_TOKEN or
    <data dir>/service-token)."""
    return _load_or_create(configured, data_dir / SERVICE_TOKEN_FILE, SERVICE_PREFIX)


def load_cursor_secret(configured: str | None, data_dir: Path) -> str:
    """The key that signs paging cursors (core.cursors), like the admin
    credential (WANDO_CURSOR_SECRET or <data dir>/cursor-secret). Core
    replicas behind one balancer need the same one to accept each other's
    cursors."""
    return _load_or_create(configured, data_dir / CURSOR_SECRET_FILE, CURSOR_PREFIX)


def load_gateway_token(configured: str | None, data_dir: Path) -> str:
    """The credential the SCIM gateway records activity with (WANDO_GATEWAY_TOKEN
    or <data dir>/gateway-token): it may call ActivityService, nothing else."""
    return _load_or_create(configured, data_dir / GATEWAY_TOKEN_FILE, GATEWAY_PREFIX)


def _load_or_create(configured: str | None, path: Path, prefix: str) -> str:
    if configured:
        return configured
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = prefix + secrets.token_urlsafe(32)
    # written whole under a name of its own, then linked into place: processes
    # started together on one data dir (a core and a gateway with the local
    # core) see the file complete or not at all, and the one that loses the
    # race takes the winner's
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
        os.link(draft, path)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    finally:
        draft.unlink()
    log.info("generated a credential in %s (mode 0600)", path)
    return token


class Guard:
    """Checks the credential a method needs."""

    def __init__(
        self,
        admin_token: str,
        authenticator: Authenticator,
        service_token: str | None = None,
        rate_limits: RateLimits | None = None,
        gateway_token: str | None = None,
    ) -> None:
        self._admin_token = admin_token.encode()
        self._service_token = service_token.encode() if service_token else None
        # the header as Wando's services send it, compared whole before parsing
        # (RoleService's hot path)
        self._service_header = b"Bearer " + self._service_token if self._service_token else None
        self._gateway_token = gateway_token.encode() if gateway_token else None
        self._authenticator = authenticator
        self._rate_limits = rate_limits

    def admin(self, context: Ctx) -> None:
        secret = bearer(context)
        if secret is None or not hmac.compare_digest(secret.encode(), self._admin_token):
            raise Unauthenticated("this method needs the admin credential")

    def service(self, context: Ctx) -> None:
        """RoleService callers: Wando's own services, with the service credential."""
        if self._service_header is not None:
            for key, value in context.invocation_metadata() or ():
                if key == "authorization":
                    if isinstance(value, str) and hmac.compare_digest(
                        value.encode(), self._service_header
                    ):
                        return
                    break  # any other spelling is parsed
        secret = bearer(context)
        if (
            secret is None
            or self._service_token is None
            or not hmac.compare_digest(secret.encode(), self._service_token)
        ):
            raise Unauthenticated("this method needs the service credential")

    def gateway(self, context: Ctx) -> None:
        """ActivityService callers: the SCIM gateway, with the gateway credential."""
        secret = bearer(context)
        if (
            secret is None
            or self._gateway_token is None
            or not hmac.compare_digest(secret.encode(), self._gateway_token)
        ):
            raise Unauthenticated("this method needs the gateway credential")

    async def scim(self, context: Ctx) -> Principal:
        secret = bearer(context)
        if secret is None:
            raise Unauthenticated("this method needs an organisation's SCIM bearer token")
        principal = await self._authenticator.authenticate(secret)
        limit = requested_limit(context)
        if limit is not None and self._rate_limits is not None:
            await self._rate_limits.charge(principal.org_id, *limit)  # core.ratelimit
        return principal
