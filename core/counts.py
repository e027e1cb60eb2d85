"""Exact per-organisation totals of users and groups, without counting rows
(migrations/0004_resource_counts.sql says why).

Each create and delete adds +1/-1 to one of SLOTS rows of its organisation in
the same statement (see INSERT_USER, DELETE_USER, INSERT_GROUP, DELETE_GROUP),
so concurrent writers rarely meet on a row and the count costs no extra round
trip; a total is the sum of the slots, read in the listing's snapshot.
"""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.db import Conn

SLOTS = 32

TOTAL = "SELECT coalesce(sum(n), 0) FROM resource_counts WHERE org_id = $1 AND resource = $2"


def slot() -> int:
    """The slot a write counts in."""
    return random.randrange(SLOTS)  # spreads writes; not a secret


async def total(conn: Conn, org_id: uuid.UUID, resource: str) -> int:
    """How many users (resource "users") or groups ("groups") the organisation has."""
    return int(await conn.fetchval(TOTAL, org_id, resource))
