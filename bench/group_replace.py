"""Issue #3's two claims about scale, measured:

1. A full-list replace (Okta's PUT /Groups/{id}) of a 10,000-member group that
   changes one member writes one membership row, and takes well under the time
   of a replace that changes every member.
2. `userName eq` stays an index lookup at 100,000 users (EXPLAIN shows it).

Run: .venv/bin/python -m bench.group_replace [--quick]
Prints a table and writes bench/out/group_replace.json. Numbers are ratios
against baselines measured in the same run: a replace that changes nothing
(the floor for reading a 10,000-member request) and one that changes all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from bench.harness import Stack, bulk_users, median_ms, stack, timed
from core import filters
from core.schema import user_schema
from core.structs import to_struct
from wando.provisioning.v1 import group_service_pb2 as gpb
from wando.provisioning.v1 import group_service_pb2_grpc

OUT = Path(__file__).parent / "out"

WRITES = """
SELECT n_tup_ins + n_tup_del + n_tup_upd AS writes
FROM pg_stat_user_tables WHERE relname = 'group_members'
"""


async def membership_writes(s: Stack) -> int:
    async with s.pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        return int(await conn.fetchval(WRITES))


async def replace_bench(s: Stack, size: int, repeat: int) -> dict[str, float]:
    ids = await bulk_users(s.pool, s.org_id, 1, 2 * size + repeat + 10)
    groups = group_service_pb2_grpc.GroupServiceStub(s.channel)

    def body(members: list[str]) -> gpb.ReplaceGroupRequest:
        document = {"displayName": "Big", "members": [{"value": i} for i in members]}
        return gpb.ReplaceGroupRequest(id=gid, group=to_struct(document), exclude_members=True)

    created = await groups.CreateGroup(
        gpb.CreateGroupRequest(group=to_struct({"displayName": "Big"}), exclude_members=True),
        metadata=s.scim,
    )
    gid = created.group.id
    current = ids[:size]
    await groups.ReplaceGroup(body(current), metadata=s.scim)

    async def same() -> None:
        await groups.ReplaceGroup(body(current), metadata=s.scim)

    spare = ids[2 * size]

    async def one_change() -> None:
        # one member joins, next time leaves again: one membership row each time
        if current[-1] == spare:
            current.pop()
        else:
            current.append(spare)
        await groups.ReplaceGroup(body(current), metadata=s.scim)

    halves = [ids[size : 2 * size], ids[:size]]

    async def all_change() -> None:
        current[:] = halves[0]
        halves.reverse()
        await groups.ReplaceGroup(body(current), metadata=s.scim)

    before = await membership_writes(s)
    await one_change()
    one_change_writes = await membership_writes(s) - before
    results = {
        "members": size,
        "unchanged_ms": median_ms(await timed(same, repeat)),
        "one_change_ms": median_ms(await timed(one_change, repeat)),
        "all_change_ms": median_ms(await timed(all_change, max(3, repeat // 2))),
        "one_change_membership_rows_written": one_change_writes,
    }
    results["one_change_vs_all_change"] = results["one_change_ms"] / results["all_change_ms"]
    results["one_change_vs_unchanged"] = results["one_change_ms"] / results["unchanged_ms"]
    return results


async def explain_bench(s: Stack, users: int) -> dict[str, object]:
    await bulk_users(s.pool, s.org_id, 10_000_000, 10_000_000 + users - 1)
    out: dict[str, object] = {"users": users}
    for name, text in (
        ("userName eq", 'userName eq "USER10000042@bench.example"'),
        ("externalId eq", 'externalId eq "ext-10000042"'),
        ("emails.value eq", 'emails.value eq "user10000042@bench.example"'),
    ):
        params = filters.Params(s.org_id)
        where = filters.compile_filter(user_schema(), text, params)
        sql = (
            f"EXPLAIN (ANALYZE, BUFFERS) SELECT r.* FROM users r WHERE r.org_id = $1 AND ({where})"
        )
        async with s.pool.acquire() as conn:
            plan = "\n".join(r[0] for r in await conn.fetch(sql, *params.values))
        out[name] = plan
    return out


async def main(quick: bool) -> None:
    size, repeat, users = (2_000, 5, 20_000) if quick else (10_000, 15, 100_000)
    async with stack() as s:
        replace = await replace_bench(s, size, repeat)
        plans = await explain_bench(s, users)
    OUT.mkdir(exist_ok=True)
    (OUT / "group_replace.json").write_text(
        json.dumps({"replace": replace, "plans": plans}, indent=2)
    )
    print(f"Full-list replace of a {size}-member group (median of {repeat} runs):")
    print(f"  nothing changes (baseline)  {replace['unchanged_ms']:8.1f} ms")
    print(
        f"  one member changes          {replace['one_change_ms']:8.1f} ms"
        f"   ({replace['one_change_membership_rows_written']} membership rows written)"
    )
    print(f"  every member changes        {replace['all_change_ms']:8.1f} ms")
    print(f"  ratio one/all               {replace['one_change_vs_all_change']:8.2f}")
    print(f"  ratio one/unchanged         {replace['one_change_vs_unchanged']:8.2f}")
    print(f"\nQuery plans at {users} users:")
    for name in ("userName eq", "externalId eq", "emails.value eq"):
        plan = str(plans[name])
        print(f"--- {name}\n{plan}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    asyncio.run(main(parser.parse_args().quick))
