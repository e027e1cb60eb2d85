"""Issue #17 item 6: a request line or a header over its limit, or too many
headers, gets a SCIM error (414, 431; 400 for a malformed head) like every
other error, and the log line says what was too long without any header's
value: a real token inside an oversized Authorization header reaches no log
(tests/drills/logscan.py scans every record)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.server import CoreServer
from tests.drills import logscan
from tests.gateway.support import ERROR_URN, PREFIX, SCIM_JSON, ScimHttp, gateway, gateway_settings

SECRET_SHAPE = "wando_scim_"


async def raw(client: TestClient[Any, Any], head: bytes) -> tuple[int, dict[str, str], Any]:
    """Send a request head as bytes; the status, headers and JSON body of the
    answer, read until the server closes the connection."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read()  # until EOF: the refusal closes the connection
    finally:
        writer.close()
    head_text, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head_text.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body) if body else None


def request(target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {PREFIX}{target} HTTP/1.1", "Host: scim.example.test"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def assert_scim_error(status: int, headers: dict[str, str], body: Any, expected: int) -> str:
    assert status == expected, (status, body)
    assert headers["content-type"] == SCIM_JSON
    assert body["schemas"] == [ERROR_URN] and body["status"] == str(expected)
    return str(body["detail"])


@pytest.fixture
def refusals(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.protocol"]


async def test_a_token_in_an_oversized_authorization_header_reaches_no_log(
    scim: ScimHttp, refusals: pytest.LogCaptureFixture
) -> None:
    assert scim.token is not None and scim.token.startswith(SECRET_SHAPE)
    assert (await scim.get("/Users")).status == 200  # the token is real and works
    scanner = logscan.active()
    lines_before = scanner.lines
    with scanner.expecting() as caught:
        authorization = f"Bearer {scim.token}" + "x" * 9000
        answer = await raw(scim.client, request("/Users", [("Authorization", authorization)]))
        detail = assert_scim_error(*answer, 431)
    assert detail == "a header is longer than 8192 bytes"
    assert caught == []  # the scanner looked at every record, and found no secret
    assert scanner.lines > lines_before
    assert scim.token not in refusals.text and "xxxxxxxx" not in refusals.text
    assert refusal_lines(refusals) == [
        "refused a request from 127.0.0.1: a header is longer than 8192 bytes (431)"
    ]
    assert not [r for r in refusals.records if r.name.startswith("aiohttp")]
    # the header name alone over the limit is refused alike
    name = "X-" + "N" * 9000
    assert_scim_error(*await raw(scim.client, request("/Users", [(name, "1")])), 431)
    # the connection was closed, the server still serves
    assert (await scim.get("/Users")).status == 200


async def test_a_request_line_over_the_limit_is_414(
    scim: ScimHttp, refusals: pytest.LogCaptureFixture
) -> None:
    target = "/Users?filter=" + "userName%20eq%20%22a%22%20or%20" * 400
    headers = [("Authorization", f"Bearer {scim.token}")]
    detail = assert_scim_error(*await raw(scim.client, request(target, headers)), 414)
    assert detail == "the request line is longer than 8192 bytes"
    assert refusal_lines(refusals) == [
        "refused a request from 127.0.0.1: the request line is longer than 8192 bytes (414)"
    ]
    assert "userName" not in refusals.text


async def test_too_many_headers_is_431(scim: ScimHttp, refusals: pytest.LogCaptureFixture) -> None:
    headers = [("Authorization", f"Bearer {scim.token}")]
    headers += [(f"X-Pad-{n}", "1") for n in range(100)]
    detail = assert_scim_error(*await raw(scim.client, request("/Users", headers)), 431)
    assert detail == "the request has more than 100 headers"
    assert refusal_lines(refusals) == [
        "refused a request from 127.0.0.1: more than 100 headers (431)"
    ]
    # 100 headers in all is within the limit
    within = [("Authorization", f"Bearer {scim.token}"), ("Connection", "close")]
    within += [(f"X-Pad-{n}", "1") for n in range(97)]
    status, _, body = await raw(scim.client, request("/Users", within))
    assert status == 200 and body["totalResults"] == 0


async def test_a_malformed_header_is_400_and_its_value_unlogged(
    scim: ScimHttp, refusals: pytest.LogCaptureFixture
) -> None:
    """aiohttp's parse errors quote the bytes around the error in their message."""
    with logscan.active().expecting() as caught:
        bad = request("/Users", [("Authorization", f"Bearer {scim.token}\x00")])
        assert_scim_error(*await raw(scim.client, bad), 400)
    assert caught == [] and scim.token is not None and scim.token not in refusals.text
    (line,) = refusal_lines(refusals)
    assert line.startswith("refused a request from 127.0.0.1: malformed request (")


async def test_the_limits_are_configurable(core: CoreServer, scim: ScimHttp) -> None:
    settings = gateway_settings(
        f"127.0.0.1:{core.port}",
        WANDO_MAX_LINE_BYTES="2048",
        WANDO_MAX_HEADER_BYTES="4096",
        WANDO_MAX_HEADERS="20",
    )
    auth = ("Authorization", f"Bearer {scim.token}")
    async with gateway(settings) as client:
        pad = ("X-Pad", "p" * 3000)  # over the default line limit, under this header limit
        status, _, body = await raw(client, request("/Users", [auth, pad, ("Connection", "close")]))
        assert status == 200, body
        answer = await raw(client, request("/Users", [auth, ("X-Pad", "p" * 5000)]))
        assert assert_scim_error(*answer, 431) == "a header is longer than 4096 bytes"
        answer = await raw(client, request("/Users?x=" + "1" * 3000, [auth]))
        assert assert_scim_error(*answer, 414) == "the request line is longer than 2048 bytes"
        many = [auth, *((f"X-Pad-{n}", "1") for n in range(20))]
        answer = await raw(client, request("/Users", many))
        assert assert_scim_error(*answer, 431) == "the request has more than 20 headers"
