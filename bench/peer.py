"""The peer every SCIM figure is divided by: scim2-server (pinned in the
`bench` extra), in memory, under uvicorn with one worker, as its own process.

scim2-server's own `scim2-server` command serves its WSGI application on
wsgiref's threaded server; its ASGI application (`ASGIApplication`, over
`AsyncInMemoryStorage`) is what runs under uvicorn. This module builds that
application the way the command builds its WSGI one: the default schemas,
resource types and service provider configuration of RFC 7643, and a static
bearer token (the command's `--bearer-token`, here env PEER_TOKEN).

    PEER_TOKEN=... python -m uvicorn bench.peer:app --factory --workers 1 ...

It serves SCIM at http://HOST:PORT/v2 (scim2-server's prefix; `/v2` is
optional there). bench.peer_process starts it and says what it supports.
"""

from __future__ import annotations

import os

from scim2_models import ScimProvider, UnauthorizedException
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.memory import AsyncInMemoryStorage
from scim2_server.requests import ScimRequest
from scim2_server.service import ScimService
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)

from bench.peer_process import TOKEN_ENV


class BearerTokenApplication(ASGIApplication):
    """The ASGI application, refusing requests without the one bearer token
    (scim2-server's own BearerTokenApplication check, on its ASGI class)."""

    def __init__(self, token: str) -> None:
        config = load_default_service_provider_config()
        config.authentication_schemes = [
            *(config.authentication_schemes or []),
            BEARER_TOKEN_SCHEME,
        ]
        provider = ScimProvider.from_discovery(
            load_default_schemas().values(), load_default_resource_types().values(), config=config
        )
        # a secret only seals cursors, which the default configuration does not offer
        super().__init__(AsyncInMemoryStorage(), provider, ScimService(provider, secret=token))
        self.token = token

    def check_auth(self, request: ScimRequest) -> None:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token != self.token:
            raise UnauthorizedException


def app() -> BearerTokenApplication:
    """uvicorn's --factory: the application, with the token from the environment."""
    return BearerTokenApplication(os.environ[TOKEN_ENV])
