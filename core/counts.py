"""Exact per-organisation totals of users and groups, without counting rows
(migrations/0004_resource_counts.sql says why).

Each create adds to one of SLOTS rows of its organisation in its insert
statement (INSERT_USERS: +1 per user of its batch; INSERT_GROUP: +1), each
delete -1 (uncount(), before the role counter is taken: lock order is
resource rows, the organisation's row, count slots, the role counter).
Concurrent writers rarely meet on a row; a total is the sum of the slots,
read in the listing's statement.
"""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.db import Conn

SLOTS = 32

UNCOUNT = """
INSERT INTO resource_counts (org_id, resource, slot, n) VALUES ($1, $2, $3, -1)
ON CONFLICT (org_id, resource, slot) DO UPDATE SET n = resource_counts.n - 1
"""

# the total, as a part of a listing's statement (core.listing), which names
# the placeholder of the resource
TOTAL = "SELECT coalesce(sum(n), 0) AS n FROM resource_counts WHERE org_id = $1 AND resource = {}"


def slot() -> int:
    """The slot a write counts in."""
    return random.randrange(SLOTS)  # spreads writes; not a secret


async def uncount(conn: Conn, org_id: uuid.UUID, resource: str) -> None:
    """One user or group fewer: before its (locked) row is deleted."""
    await conn.execute(UNCOUNT, org_id, resource, slot())
