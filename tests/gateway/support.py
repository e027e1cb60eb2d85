"""An HTTP client for the gateway's SCIM API: requests as Okta sends them,
replies with their status, headers and parsed JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from multidict import CIMultiDictProxy

from cli.run import local_core
from common import config
from gateway.app import create_app
from gateway.protocol import ScimAppRunner
from tests.support import GATEWAY_TOKEN

PREFIX = "/api/auth/scim/v2"
PUBLIC_BASE_URL = "https://scim.example.test"
BASE = PUBLIC_BASE_URL + PREFIX
SCIM_JSON = "application/scim+json; charset=utf-8"
ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

# shared/reference/idp-scim-traffic.md §1.1
OKTA_HEADERS = {
    "Accept": "application/scim+json",
    "Accept-Charset": "utf-8",
    "User-Agent": "Okta SCIM Client 1.0.0",
}


def gateway_settings(core_address: str | None = None, **env: str) -> config.Settings:
    """`core_address`, or WANDO_CORE in `env` (the `core_env` fixture: the
    test's core over gRPC, or the local core on the test's database)."""
    return config.load(
        env={
            **({"WANDO_CORE": core_address} if core_address is not None else {}),
            "WANDO_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "WANDO_DATA_DIR": "/nonexistent-wando-test",
            "WANDO_GATEWAY_TOKEN": GATEWAY_TOKEN,
            **env,
        }
    )


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: Any  # the parsed JSON, or None for an empty body
    text: str

    def assert_error(self, status: int, scim_type: str | None = None) -> str:
        """Check an RFC 7644 §3.12 error reply; returns its detail."""
        assert self.status == status, (self.status, self.text)
        assert self.headers["Content-Type"] == SCIM_JSON
        assert self.body["schemas"] == [ERROR_URN]
        assert self.body["status"] == str(status)  # a string, as Okta's suite checks
        assert self.body.get("scimType") == scim_type, self.body
        assert isinstance(self.body["detail"], str) and self.body["detail"]
        return str(self.body["detail"])

    def assert_list(self) -> list[dict[str, Any]]:
        """Check a ListResponse reply; returns its Resources."""
        assert self.status == 200, (self.status, self.text)
        assert self.headers["Content-Type"] == SCIM_JSON
        assert self.body["schemas"] == [LIST_URN]
        for key in ("totalResults", "startIndex", "itemsPerPage"):
            assert type(self.body[key]) is int, (key, self.body)
        resources = self.body["Resources"]
        assert isinstance(resources, list)
        assert self.body["itemsPerPage"] == len(resources)
        return resources


class ScimHttp:
    """Requests against the gateway as one bearer token (or none)."""

    def __init__(self, client: TestClient[Any, Any], token: str | None = None) -> None:
        self.client = client
        self.token = token

    def as_token(self, token: str | None) -> ScimHttp:
        return ScimHttp(self.client, token)

    def as_client(self, client: TestClient[Any, Any]) -> ScimHttp:
        """The same token, through another gateway."""
        return ScimHttp(client, self.token)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        headers: dict[str, str | None] | None = None,
    ) -> Reply:
        """Okta's headers and the bearer token, unless `headers` replaces them
        (a None value leaves a header out)."""
        sent: dict[str, str | None] = dict(OKTA_HEADERS)
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent["Content-Type"] = SCIM_JSON
        sent.update(headers or {})
        present = {k: v for k, v in sent.items() if v is not None}
        async with self.client.request(method, PREFIX + path, data=data, headers=present) as r:
            text = await r.text()
            body = json.loads(text) if text else None
            return Reply(r.status, r.headers, body, text)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", path, json_body=body, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("PUT", path, json_body=body, **kw)

    async def patch(self, path: str, *operations: dict[str, Any], **kw: Any) -> Reply:
        body = {"schemas": [PATCH_URN], "Operations": list(operations)}
        return await self.request("PATCH", path, json_body=body, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.request("DELETE", path, **kw)


class GatewayTestServer(TestServer):
    """aiohttp's TestServer with the runner gateway.app.serving uses."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return ScimAppRunner(self.app, **kwargs)


@asynccontextmanager
async def gateway(settings: config.Settings) -> AsyncIterator[TestClient[Any, Any]]:
    """The gateway on a real aiohttp server on a free port; with WANDO_CORE=local
    hosting the core's SCIM services itself, as `wando gateway` does (cli.run)."""
    async with local_core(settings) as core:
        server = GatewayTestServer(create_app(settings, core))
        # as gateway.app.serving runs it: our access log only (aiohttp's logs query strings)
        await server.start_server(access_log=None)
        async with TestClient(server) as client:
            yield client


def okta_user(user_name: str, **extra: Any) -> dict[str, Any]:
    """The body Okta sends to create a user (shared/reference §1.2 (3b))."""
    given, _, family = user_name.partition("@")[0].partition(".")
    body: dict[str, Any] = {
        "schemas": [USER_URN],
        "userName": user_name,
        "name": {"givenName": given.title() or "Test", "familyName": family.title() or "User"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": f"{given.title()} {family.title()}".strip(),
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }
    body.update(extra)
    return body
