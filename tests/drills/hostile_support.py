"""What the hostile-input and limits drills share: a gateway whose rate limit
cannot throttle a fuzz run, a client that times every request and keeps the
figures, the check that a rejection is a proper SCIM error, and a fingerprint
of the tables a rejected request must leave alone."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from core.server import CoreServer
from tests.drills.report import report
from tests.gateway.support import (
    ERROR_URN,
    OKTA_HEADERS,
    PREFIX,
    SCIM_JSON,
    Reply,
    gateway,
    gateway_settings,
)

# generous: a request that takes longer is doing unbounded work (or the
# machine is badly overloaded); the figures report the real maximum
MAX_SECONDS = 2.0

SCIM_TYPES = frozenset(
    {
        "invalidFilter",
        "tooMany",
        "uniqueness",
        "mutability",
        "invalidSyntax",
        "invalidPath",
        "noTarget",
        "invalidValue",
        "invalidVers",
        "sensitive",
    }
)


@asynccontextmanager
async def drill_gateway(core: CoreServer, **env: str) -> AsyncIterator[TestClient[Any, Any]]:
    """The gateway against `core`, with the rate limit off (0 disables it) so
    thousands of requests in a row are all answered on their merits."""
    settings = gateway_settings(f"127.0.0.1:{core.port}", WANDO_RATE_LIMIT_PER_SECOND="0", **env)
    async with gateway(settings) as client:
        yield client


@dataclass
class Figures:
    """Requests sent, statuses seen and the slowest answer, for one drill."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    scim_types: Counter[str] = field(default_factory=Counter)
    max_seconds: float = 0.0
    slowest: str = ""

    def report(self, drill: str, **extra: Any) -> None:
        report(
            drill,
            requests=self.requests,
            statuses={str(k): v for k, v in sorted(self.statuses.items())},
            scim_types=dict(sorted(self.scim_types.items())),
            max_latency_ms=round(self.max_seconds * 1000, 1),
            slowest=self.slowest,
            **extra,
        )


class Hostile:
    """Raw requests to the gateway as one bearer token: any method, any path,
    any bytes. Every answer is timed and counted; none may be a 5xx."""

    def __init__(self, client: TestClient[Any, Any], token: str | None, figures: Figures) -> None:
        self.client = client
        self.token = token
        self.figures = figures

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        max_seconds: float = MAX_SECONDS,
    ) -> Reply:
        """`path` is below the SCIM prefix, query string included, sent as is;
        `body` is sent as JSON, `data` as raw bytes."""
        sent = dict(OKTA_HEADERS)
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = SCIM_JSON
        sent.update(headers or {})
        started = time.perf_counter()
        async with self.client.request(
            method, PREFIX + path, data=data, headers=sent, skip_auto_headers=["Content-Type"]
        ) as r:
            raw = await r.read()
        elapsed = time.perf_counter() - started
        text = raw.decode("utf-8")  # every answer is UTF-8, whatever was sent
        reply = Reply(r.status, r.headers, _json_or_none(text), text)
        self._count(method, path, reply, elapsed, max_seconds)
        return reply

    def _count(
        self, method: str, path: str, reply: Reply, elapsed: float, max_seconds: float
    ) -> None:
        figures = self.figures
        figures.requests += 1
        figures.statuses[reply.status] += 1
        if isinstance(reply.body, dict) and reply.body.get("scimType"):
            figures.scim_types[str(reply.body["scimType"])] += 1
        if elapsed > figures.max_seconds:
            figures.max_seconds = elapsed
            figures.slowest = f"{method} {path[:80]} → {reply.status}"
        assert reply.status < 500, (method, path[:200], reply.status, reply.text[:500])
        assert elapsed < max_seconds, (method, path[:200], f"{elapsed:.2f}s")


def _json_or_none(text: str) -> Any:
    """The parsed answer; None when it is empty or not JSON (aiohttp's own
    answers to requests that are not HTTP, which never reach the app)."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def scim_error(reply: Reply, *mentions: str) -> str:
    """Assert `reply` is an RFC 7644 §3.12 error (4xx, the Error schema, status
    as a string, a non-empty detail, a known scimType if any) whose detail
    mentions each of `mentions` (case-insensitively); returns the detail."""
    assert 400 <= reply.status < 500, (reply.status, reply.text[:500])
    assert reply.headers["Content-Type"] == SCIM_JSON, reply.headers
    body = reply.body
    assert isinstance(body, dict), reply.text[:500]
    assert body["schemas"] == [ERROR_URN], body
    assert body["status"] == str(reply.status), body
    detail = body.get("detail")
    assert isinstance(detail, str) and detail.strip(), body
    scim_type = body.get("scimType")
    assert scim_type is None or scim_type in SCIM_TYPES, body
    for mention in mentions:
        assert mention.lower() in detail.lower(), (mention, detail[:500])
    return detail


def expect(reply: Reply, status: int, scim_type: str | None, *mentions: str) -> str:
    """A SCIM error with exactly this status and scimType."""
    detail = scim_error(reply, *mentions)
    assert reply.status == status, (reply.status, reply.text[:500])
    assert reply.body.get("scimType") == scim_type, reply.body
    return detail


# A token's last_used_at is left out: any authenticated request, even a
# refused one, may note that the token was used.
VOLATILE_COLUMNS = {("scim_tokens", "last_used_at")}
# activity records every request, refused ones included (issue #18): it is a
# log of what was asked, not data a refused request may change (stored in
# activity_chunks; activity_counts says how much of it each organisation has)

TABLES = """
SELECT c.table_name, array_agg(c.column_name::text ORDER BY c.ordinal_position) AS columns
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
  AND c.table_name NOT IN ('schema_migrations', 'activity_chunks', 'activity_counts')
GROUP BY c.table_name ORDER BY c.table_name
"""


async def snapshot(pool: asyncpg.Pool) -> dict[str, str]:
    """Every table of the schema (users, groups, group_members, audit_events,
    role_changes, ...) as its row count and one md5 of its rows in a fixed
    order, read in one statement: equal fingerprints mean equal contents."""
    parts = []
    for row in await pool.fetch(TABLES):
        table = row["table_name"]
        columns = [c for c in row["columns"] if (table, c) not in VOLATILE_COLUMNS]
        # names come from the catalogue, never from a request
        listed = ", ".join(f'"{c}"' for c in columns)
        parts.append(
            f"SELECT '{table}' AS t, count(*) AS n,"
            f" coalesce(md5(string_agg(s::text, '|' ORDER BY s::text)), '') AS h"
            f' FROM (SELECT {listed} FROM "{table}") s'
        )
    rows = await pool.fetch(" UNION ALL ".join(parts))
    return {row["t"]: f"{row['n']}:{row['h']}" for row in rows}
