"""The counted workloads: a fixed amount of work, timed as a whole or request
by request, rather than a rate over a fixed time.

- Okta's import: pages of 100 read one after the other (Okta reads the next
  page after the last), at two sizes, each on freshly started service
  processes so that VmHWM (a peak that cannot be reset) is that import's;
  and the large one on the peer (which cannot restart: its data is in memory).
  The same import of the large organisation by cursor (RFC 9865), whose last
  page should cost what its first does.
- A full-list PUT of a large group changing one member vs. all members, and
  the structural check that the one-member change writes one row.
- Okta's first push: users (lookup + POST), then groups (lookup + POST +
  PATCH members); its wall time; on ours and on the peer.
- Deactivation propagation: from the 200 of a SCIM deactivation (gateway →
  core replica A) to a second core replica's minimize_latency answer saying
  "no role", p50 and p99, with in_flight deactivations at once.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg

from bench import checks, dataset, processes, targets
from bench.dataset import Dataset
from bench.peer_process import Peer
from bench.processes import Child
from bench.run import Processes, Run
from bench.service import SERVICE_TOKEN, Service

PAGE = 100  # Okta's import page size
EDGE_PAGES = 5  # first and last pages compared
IMPORT_IN_FLIGHT = 1  # Okta reads one page after the other


def _hwm_mib(children: Iterable[Child]) -> dict[str, float]:
    return {c.name: round(processes.tree_hwm_kib(c.pid) / 1024, 1) for c in children}


def _title(total: int, job: str = "import_page") -> str:
    what = "import by cursor" if job == "cursor_import_page" else "Okta import"
    return f"{what}, {total:,} users (pages of {PAGE})"


async def _edges(
    run: Run,
    row: dict[str, Any],
    ordered: list[float],
    base: str,
    params: dict[str, Any],
    label: str = "ours",
    *,
    can_jump: bool = True,
) -> None:
    """First and last pages' median latency; if the time cap ended the walk,
    the last pages are read on their own (by startIndex; a cursor walk cannot
    jump to its end, so it compares the last pages it reached)."""
    pages = math.ceil(params["total"] / PAGE)
    first = statistics.median(ordered[:EDGE_PAGES])
    if row["complete"] or not can_jump:
        last = statistics.median(ordered[-EDGE_PAGES:])
        if not row["complete"]:
            row["note"] = f"walked {row['jobs']} of {pages} pages within the cap"
    else:
        tail_first = max(0, pages - EDGE_PAGES)
        tail = await run.aside(
            f"{row['title']}, last pages",
            run.counted_spec(
                "import_page",
                params,
                pages - tail_first,
                1,
                http=base,
                keep_order=True,
                first_index=tail_first,
            ),
            label,
            row["name"],
        )
        last = statistics.median(tail["ordered_ms"])
        row["note"] = f"walked {row['jobs']} of {pages} pages within the cap"
    row.update(first_page_ms=round(first, 2), last_page_ms=round(last, 2))


async def one_import(
    run: Run,
    service: Service,
    name: str,
    org: dataset.Org,
    total: int,
    job: str = "import_page",
) -> dict[str, Any]:
    """Okta's import of `total` users, page after page, on fresh processes;
    by startIndex, or by cursor with job "cursor_import_page"."""
    await service.restart()
    pages = math.ceil(total / PAGE)
    params = {"token": org.token, "total": total, "count": PAGE}
    title = _title(total, job)
    # Okta's "Test Connector" read comes first; here it also opens the pools
    warm_up = run.counted_spec(job, params, 2, 1, http=service.scim_base)
    await run.aside(f"{title}, warm-up", warm_up)
    spec = run.counted_spec(
        job, params, pages, IMPORT_IN_FLIGHT, http=service.scim_base, keep_order=True
    )
    row = await run.measure(name, title, spec, service)
    await _edges(
        run,
        row,
        row.pop("ordered_ms"),
        service.scim_base,
        params,
        can_jump=job == "import_page",
    )
    row.update(
        peak_rss_mib=_hwm_mib(service.children),  # VmHWM of these fresh processes
        rss_method="VmHWM of the service's processes started just before this import",
    )
    run.rows[-1] = row
    return row


async def peer_import(run: Run, peer: Peer, data: Dataset) -> None:
    """The large import on the peer. Its pages cost the same wherever they
    start (it sorts every user for each page), so it walks for a bounded time
    (sizes.peer_import_seconds) rather than to the end."""
    total = len(data.users)
    params = {"token": data.main.token, "total": total, "count": PAGE}
    title = _title(total)
    warm_up = run.counted_spec("import_page", params, 2, 1, http=peer.scim_base)
    await run.aside(f"{title}, warm-up", warm_up, "peer", "peer:import")
    spec = run.counted_spec(
        "import_page",
        params,
        math.ceil(total / PAGE),
        IMPORT_IN_FLIGHT,
        http=peer.scim_base,
        keep_order=True,
        seconds=run.sizes.peer_import_seconds,
    )
    row = await run.measure("peer:import", title, spec, peer, "peer")
    await _edges(run, row, row.pop("ordered_ms"), peer.scim_base, params, "peer")
    run.rows[-1] = row


async def run_imports(run: Run, service: Service, data: Dataset) -> None:
    assert data.small is not None
    small = await one_import(run, service, "import-small", data.small, data.small_users)
    large = await one_import(run, service, "import", data.main, len(data.users))
    ratio = large["last_page_ms"] / large["first_page_ms"]
    run.checks["import last page vs first"] = {
        "value": round(ratio, 2),
        "target": f"≤ {targets.LAST_PAGE_VS_FIRST:g}",
        "met": ratio <= targets.LAST_PAGE_VS_FIRST,
    }
    by_cursor = await one_import(
        run, service, "cursor-import", data.main, len(data.users), "cursor_import_page"
    )
    ratio = by_cursor["last_page_ms"] / by_cursor["first_page_ms"]
    run.checks["cursor import last page vs first"] = {
        "value": round(ratio, 2),
        "target": f"≤ {targets.LAST_PAGE_VS_FIRST:g}",
        "met": ratio <= targets.LAST_PAGE_VS_FIRST,
    }
    for process in large["peak_rss_mib"].keys() & small["peak_rss_mib"].keys():
        growth = large["peak_rss_mib"][process] / small["peak_rss_mib"][process]
        run.checks[f"peak RSS of {process}, large vs small import"] = {
            "value": round(growth, 2),
            "small_mib": small["peak_rss_mib"][process],
            "large_mib": large["peak_rss_mib"][process],
            "target": f"≤ {targets.RSS_GROWTH:g}",
            "met": growth <= targets.RSS_GROWTH,
        }


async def run_group_replace(run: Run, service: Service, data: Dataset, pool: asyncpg.Pool) -> None:
    size = run.sizes.big_group
    base = [u.id for u in data.users[:size]]
    other = [u.id for u in data.users[size : 2 * size]]
    spare = data.users[2 * size].id
    written = await checks.one_change_writes(
        pool,
        service.scim_base,
        data.main.token,
        data.main.id,
        data.big_group,
        data.big_group_name,
        base,
        spare,
    )
    run.checks["group PUT changing one member writes one membership row"] = written
    params = {
        "token": data.main.token,
        "group": data.big_group,
        "display_name": data.big_group_name,
        "base": base,
        "other": other,
        "spare": spare,
    }
    timed = {}
    for mode, what in (("one", "one member changes"), ("all", "all members change")):
        spec = run.counted_spec(
            "replace_group",
            {**params, "mode": mode},
            run.sizes.replace_repeats,
            1,
            http=service.scim_base,
        )
        title = f"PUT /Groups/{{id}}, {size:,} members, {what}"
        timed[mode] = await run.measure(f"group-replace-{mode}", title, spec, service)
    one, every = timed["one"]["p50_ms"], timed["all"]["p50_ms"]
    run.checks["group PUT p50, one member vs all members"] = {
        "value": round(one / every, 3) if every else None,
        "target": "well under 1 (no target in issue #7)",
        "met": None,
    }


PUSHED_USERS = "SELECT user_id::text FROM users WHERE org_id = $1 ORDER BY created_at, user_id"


async def _push(
    run: Run,
    server: Service | Peer,
    label: str,
    token: str,
    member_ids: Callable[[], Awaitable[list[str]]],
) -> float:
    """Okta's first push at `server`: the users, then the groups, whose
    members are `member_ids()` (read once the users are in); its wall time."""
    users, groups = run.sizes.push_users, run.sizes.push_groups
    prefix = "" if label == "ours" else f"{label}:"
    params = {"token": token, "run": f"r{int(time.time())}"}
    pushed_users = await run.measure(
        f"{prefix}push-users",
        f"first push: {users:,} users (lookup + POST)",
        run.counted_spec("push_user", params, users, run.sizes.in_flight, http=server.scim_base),
        server,
        label,
    )
    group_params = {**params, "users": await member_ids(), "per_group": max(1, users // groups)}
    pushed_groups = await run.measure(
        f"{prefix}push-groups",
        f"first push: {groups} groups (lookup + POST + PATCH members)",
        run.counted_spec(
            "push_group", group_params, groups, run.sizes.in_flight, http=server.scim_base
        ),
        server,
        label,
    )
    for part in (pushed_users, pushed_groups):
        if not part["complete"]:
            run.failures.append(
                f"{part['title']} ({label}): only {part['jobs']} done within "
                f"{run.sizes.cap_seconds:g} s"
            )
    return float(pushed_users["elapsed_s"] + pushed_groups["elapsed_s"])


async def run_push(run: Run, service: Service, data: Dataset, pool: asyncpg.Pool) -> float:
    """The first push at ours, into an empty organisation; its wall time."""

    async def pushed() -> list[str]:
        async with pool.acquire() as conn:
            return [r[0] for r in await conn.fetch(PUSHED_USERS, data.push.id)]

    return await _push(run, service, "ours", data.push.token, pushed)


async def peer_push(run: Run, peer: Peer, data: Dataset) -> float:
    """The first push at the peer, whose groups' members are seeded users
    (it checks no member reference); its wall time."""

    async def seeded() -> list[str]:
        return [u.id for u in data.users[: run.sizes.push_users]]

    return await _push(run, peer, "peer", data.push.token, seeded)


async def run_deactivation(run: Run, service: Service, data: Dataset) -> None:
    replica = await service.second_core()
    try:
        users = [u.id for u in data.sample[: max(run.sizes.deactivations, run.sizes.in_flight)]]
        params = {
            "org": data.main.slug,
            "service_token": SERVICE_TOKEN,
            "user_ids": users,
            "token": data.main.token,
        }
        spec = run.counted_spec(
            "deactivation",
            params,
            run.sizes.deactivations,
            run.sizes.in_flight,
            http=service.scim_base,
            grpc=f"127.0.0.1:{replica.port}",
        )
        title = "deactivation: SCIM 200 on replica A → replica B's minimize_latency says no role"
        both = Processes([*service.children, replica.child], service.postmaster)
        row = await run.measure("deactivation", title, spec, both)
    finally:
        await replica.child.stop()
    p99 = row.get("p99_ms")
    run.checks["deactivation propagation p99 (ms)"] = {
        "value": p99,
        "p50_ms": row.get("p50_ms"),
        "target": f"< {targets.DEACTIVATION_P99_MS:g}",
        "met": None if p99 is None else p99 < targets.DEACTIVATION_P99_MS,
    }
