"""The peer's data, through its own SCIM API (it has no SQL), before anything
is timed: the same users as bench.seed writes for us (same userName,
externalId, name, emails, in the same order), the member-PATCH groups and
the 10,000-member group. Users go in by /Bulk, 1,000 a request (the peer's
maxOperations), which is the fastest way its API offers."""

from __future__ import annotations

import random
from typing import Any

import aiohttp

from bench.context import OKTA_HEADERS
from bench.dataset import BIG_GROUP, PATCH_GROUP, SAMPLE, Dataset, Org
from bench.jobs import GROUP_URN, USER_URN
from bench.peer_process import TOKEN, Peer
from bench.seed import SeededUser
from bench.sizes import Sizes

BULK_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_OPERATIONS = 1_000


def seeded_user(n: int) -> dict[str, Any]:
    """User n as bench.seed.USERS writes it into our tables."""
    name = f"user{n}@bench.example"
    return {
        "schemas": [USER_URN],
        "userName": name,
        "externalId": f"ext-{n}",
        "displayName": f"User {n}",
        "active": True,
        "name": {"givenName": "User", "familyName": f"N{n}"},
        "emails": [{"value": name, "type": "work", "primary": True}],
    }


async def _send(
    session: aiohttp.ClientSession, method: str, url: str, body: Any, expect: int
) -> Any:
    headers = {**OKTA_HEADERS, "Authorization": f"Bearer {TOKEN}"}
    async with session.request(method, url, json=body, headers=headers) as reply:
        text = await reply.text()
        if reply.status != expect:
            raise RuntimeError(f"peer seeding: {method} {url} -> {reply.status}: {text[:300]}")
        return await reply.json(content_type=None)


async def _users(session: aiohttp.ClientSession, base: str, count: int) -> list[SeededUser]:
    out = []
    for first in range(1, count + 1, BULK_OPERATIONS):
        numbers = range(first, min(count, first + BULK_OPERATIONS - 1) + 1)
        body = {
            "schemas": [BULK_URN],
            "Operations": [
                {"method": "POST", "path": "/Users", "bulkId": f"u{n}", "data": seeded_user(n)}
                for n in numbers
            ],
        }
        answer = await _send(session, "POST", f"{base}/Bulk", body, 200)
        by_bulk_id = {op["bulkId"]: op for op in answer["Operations"]}
        for n in numbers:
            op = by_bulk_id[f"u{n}"]
            if str(op.get("status")) != "201":
                raise RuntimeError(f"peer seeding: user {n}: {str(op)[:300]}")
            out.append(SeededUser(op["location"].rsplit("/", 1)[1], f"user{n}@bench.example"))
    return out


async def _group(session: aiohttp.ClientSession, base: str, name: str, members: list[str]) -> str:
    body = {"schemas": [GROUP_URN], "displayName": name, "members": [{"value": m} for m in members]}
    created = await _send(session, "POST", f"{base}/Groups", body, 201)
    return str(created["id"])


async def build(peer: Peer, sizes: Sizes) -> Dataset:
    base = peer.scim_base
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        users = await _users(session, base, sizes.users)
        patch_groups = [
            await _group(session, base, f"{PATCH_GROUP}{n}", [])
            for n in range(1, sizes.patch_groups + 1)
        ]
        members = [u.id for u in users[: sizes.big_group]]
        big_group = await _group(session, base, f"{BIG_GROUP}1", members)
    org = Org("peer", "", TOKEN)  # one tenant: no organisation id
    # the same sample as ours (dataset.build draws it with the same seed)
    sample = random.Random(7).sample(users, min(SAMPLE, len(users)))
    return Dataset(
        org,
        None,
        org,
        users,
        sample,
        patch_groups,
        big_group,
        f"{BIG_GROUP}1",
        0,
        users[sizes.big_group :][:SAMPLE],
    )
