"""What one unit of load does, by name: the requests of each workload, as an
identity provider or a Wando service sends them (shared/reference/
idp-scim-traffic.md for Okta's shapes).

A job is `async def job(ctx, index)`; `index` counts the jobs of a run from 0,
so jobs that create things name them after it and jobs that walk (import
pages) use it as the position. Every request goes through bench.context's
Context, which times it and records any unexpected status as an error.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from bench.baselines import METHOD as EMPTY_METHOD
from bench.baselines import READ_METHOD
from bench.context import Context
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import role_service_pb2_grpc

Job = Callable[[Context, int], Awaitable[None]]

USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PROPAGATION_LIMIT_SECONDS = 10.0  # a deactivation not seen by then is an error


# -- baselines (bench.baselines) ---------------------------------------------


async def empty_rpc(ctx: Context, i: int) -> None:
    call = ctx.stub("empty", lambda channel: channel.unary_unary(EMPTY_METHOD))
    await ctx.rpc(i, "empty call", call(b"", timeout=10))


async def grpc_read(ctx: Context, i: int) -> None:
    call = ctx.stub("read", lambda channel: channel.unary_unary(READ_METHOD))
    await ctx.rpc(i, "read call", call(b"", timeout=10))


async def chain_echo(ctx: Context, i: int) -> None:
    await ctx.http(i, "GET /echo", "GET", "/echo")


async def chain_write(ctx: Context, i: int) -> None:
    await ctx.http(i, "POST /write", "POST", "/write")


async def chain_read(ctx: Context, i: int) -> None:
    await ctx.http(i, "GET /read", "GET", "/read")


# -- RoleService, as Wando's own services call it -----------------------------


def _roles(ctx: Context) -> role_service_pb2_grpc.RoleServiceAsyncStub:
    stub: role_service_pb2_grpc.RoleServiceAsyncStub = ctx.stub(
        "roles", role_service_pb2_grpc.RoleServiceStub
    )
    return stub


def _service_metadata(ctx: Context) -> tuple[tuple[str, str]]:
    """The credential, made once a run (as a Wando service holds it)."""
    metadata: tuple[tuple[str, str]] | None = ctx.state.get("service_metadata")
    if metadata is None:
        metadata = (("authorization", f"Bearer {ctx.params['service_token']}"),)
        ctx.state["service_metadata"] = metadata
    return metadata


def _consistency(ctx: Context) -> rpb.Consistency:
    """The workload's consistency: minimize_latency (the cache) or
    fully_consistent; made once a run."""
    made: rpb.Consistency | None = ctx.state.get("consistency")
    if made is None:
        made = rpb.Consistency(**{ctx.params.get("consistency", "minimize_latency"): True})
        ctx.state["consistency"] = made
    return made


def _pick(ctx: Context, i: int) -> str:
    """A user id: the first len(user_ids) jobs (the warm-up's, bench.suite)
    take each once, so that what is timed is the replica's cache at work, as
    it is once a service has run a while; then random ones."""
    ids: list[str] = ctx.params["user_ids"]
    return ids[i] if i < len(ids) else ctx.rng.choice(ids)


GET_EFFECTIVE_ROLE = "/wando.provisioning.v1.RoleService/GetEffectiveRole"


async def role(ctx: Context, i: int) -> None:
    """One lookup, with a client as thin as the empty call's (bench.baselines):
    bytes in and out of a bare multicallable, each user's request serialized
    once a run, the answer parsed here. The load process shares the machine's
    CPU with the server, so a heavier client than the baseline's would count
    against the server's ratio: the generated stub's per-call work cost the
    load process about 0.07 ms a call more than the empty call's."""
    call = ctx.stub("roles-raw", lambda channel: channel.unary_unary(GET_EFFECTIVE_ROLE))
    requests: dict[str, bytes] = ctx.state.setdefault("role_requests", {})
    user_id = _pick(ctx, i)
    request = requests.get(user_id)
    if request is None:
        request = requests[user_id] = rpb.GetEffectiveRoleRequest(
            organization=ctx.params["org"],
            user=rpb.UserSelector(user_id=user_id),
            consistency=_consistency(ctx),
        ).SerializeToString()
    answer = await ctx.rpc(
        i, "GetEffectiveRole", call(request, metadata=_service_metadata(ctx), timeout=10)
    )
    if answer is not None:
        response = rpb.GetEffectiveRoleResponse.FromString(answer)
        if response.role.role == 0:  # str() only then: it costs
            ctx.check(False, "GetEffectiveRole: no role", str(response))


async def role_batch(ctx: Context, i: int) -> None:
    every, size = ctx.params["user_ids"], ctx.params["batch"]
    if (i + 1) * size <= len(every):  # the warm-up's: each user once (as _pick)
        ids = every[i * size : (i + 1) * size]
    else:
        ids = ctx.rng.sample(every, size)
    request = rpb.BatchGetEffectiveRolesRequest(
        organization=ctx.params["org"],
        users=[rpb.UserSelector(user_id=u) for u in ids],
        consistency=_consistency(ctx),
    )
    call = _roles(ctx).BatchGetEffectiveRoles(request, metadata=_service_metadata(ctx), timeout=10)
    response = await ctx.rpc(i, "BatchGetEffectiveRoles", call)
    if response is not None:
        found = sum(1 for entry in response.entries if entry.found)
        ctx.check(
            found == len(ids), "BatchGetEffectiveRoles: users not found", f"{found} of {len(ids)}"
        )


async def deactivation(ctx: Context, i: int) -> None:
    """Deactivation propagation: a user's deactivation by SCIM PATCH through
    the gateway (core replica A), timed from its 200 to the moment replica B's
    minimize_latency answer says "no role" (polling B back to back); then the
    user is activated again. Only that interval is recorded: the requests
    themselves are not timed (timed=False each, since concurrent jobs share
    the context). B holds the user's answer beforehand."""
    user_id = ctx.params["user_ids"][i % len(ctx.params["user_ids"])]
    roles, metadata = _roles(ctx), _service_metadata(ctx)
    request = rpb.GetEffectiveRoleRequest(
        organization=ctx.params["org"],
        user=rpb.UserSelector(user_id=user_id),
        consistency=rpb.Consistency(minimize_latency=True),
    )
    path = f"/Users/{user_id}"

    async def ask_b() -> Any:
        call = roles.GetEffectiveRole(request, timeout=10, metadata=metadata)
        return await ctx.rpc(i, "GetEffectiveRole (B)", call, timed=False)

    held = await ask_b()
    if held is None:
        return
    ctx.check(held.role.role != 0, "deactivation: no role before", str(held)[:300])
    off = {
        "schemas": [PATCH_URN],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    if await ctx.http(i, "PATCH active false", "PATCH", path, off, timed=False) is None:
        return
    done = time.perf_counter()
    deadline = done + PROPAGATION_LIMIT_SECONDS
    while True:
        answer = await ask_b()
        if answer is not None and answer.role.role == 0:
            seen = time.perf_counter()
            break
        if answer is None or time.perf_counter() > deadline:
            ctx.check(False, "deactivation: replica B still grants a role", user_id)
            return
    ctx.record_ms(i, (seen - done) * 1000)
    on = {
        "schemas": [PATCH_URN],
        "Operations": [{"op": "replace", "path": "active", "value": True}],
    }
    await ctx.http(i, "PATCH active true", "PATCH", path, on, timed=False)


# -- SCIM, as Okta sends it ---------------------------------------------------


def _eq_filter(attribute: str, value: str) -> str:
    """Okta's encoding of an `eq` lookup (reference §1.2 (3a))."""
    return f"filter={attribute}%20eq%20%22{quote(value, safe='')}%22&startIndex=1&count=100"


def okta_user(user_name: str, external_id: str) -> dict[str, Any]:
    """The body Okta sends to create a user (reference §1.2 (3b))."""
    return {
        "schemas": [USER_URN],
        "userName": user_name,
        "name": {"givenName": "Bench", "familyName": "User"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": "Bench User",
        "locale": "en-US",
        "externalId": external_id,
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }


async def filter_user(ctx: Context, i: int) -> None:
    name = ctx.rng.choice(ctx.params["user_names"])
    path = "/Users?" + _eq_filter("userName", name)
    found = await ctx.http(i, "GET /Users?filter=userName eq", "GET", path)
    if found is not None:
        ctx.check(found["totalResults"] == 1, "filter: not exactly one user", str(found)[:300])


async def get_user(ctx: Context, i: int) -> None:
    user_id = ctx.rng.choice(ctx.params["user_ids"])
    found = await ctx.http(i, "GET /Users/{id}", "GET", f"/Users/{user_id}")
    if found is not None:
        ctx.check(found["id"] == user_id, "GET /Users/{id}: another user", str(found)[:300])


async def create_user(ctx: Context, i: int) -> None:
    name = f"new{i}.{ctx.params['run']}@bench.example"
    await ctx.http(i, "POST /Users", "POST", "/Users", okta_user(name, f"okta-{i}"), expect=(201,))


async def replace_user(ctx: Context, i: int) -> None:
    """Okta's profile update (reference §1.2 (5)), spread over many users so
    that concurrent PUTs rarely meet on one row."""
    user_id, name = ctx.params["users"][i % len(ctx.params["users"])]
    body = {
        "schemas": [USER_URN],
        "id": user_id,
        "userName": name,
        "name": {"givenName": f"Given{i}", "middleName": "Bench", "familyName": "User"},
        "emails": [{"primary": True, "value": name, "type": "work", "display": name}],
        "active": True,
        "groups": [],
        "meta": {"resourceType": "User"},
    }
    await ctx.http(i, "PUT /Users/{id}", "PUT", f"/Users/{user_id}", body)


async def member_patch(ctx: Context, i: int) -> None:
    """One member added to a group, then removed again: Okta's OIN-style
    PATCHes (reference §1.2 (10)). Two requests; concurrent jobs touch
    different (group, user) pairs."""
    groups, users = ctx.params["groups"], ctx.params["users"]
    group_id = groups[i % len(groups)]
    user_id, name = users[i % len(users)]
    add = {
        "schemas": [PATCH_URN],
        "Operations": [
            {"op": "add", "path": "members", "value": [{"value": user_id, "display": name}]}
        ],
    }
    remove = {
        "schemas": [PATCH_URN],
        "Operations": [{"op": "remove", "path": f'members[value eq "{user_id}"]'}],
    }
    path = f"/Groups/{group_id}"
    if await ctx.http(i, "PATCH add member", "PATCH", path, add, expect=(200, 204)) is None:
        return
    await ctx.http(i, "PATCH remove member", "PATCH", path, remove, expect=(200, 204))


async def replace_group(ctx: Context, i: int) -> None:
    """Okta's full-list PUT of a large group (reference §1.2 (10), AIW). The
    group starts with `base`; mode "one" adds `spare` and takes it out again
    (one membership changes), mode "all" swaps `base` for `other` and back."""
    p = ctx.params
    if p["mode"] == "one":
        members = [*p["base"], p["spare"]] if i % 2 == 0 else p["base"]
    else:
        members = p["other"] if i % 2 == 0 else p["base"]
    body = {
        "schemas": [GROUP_URN],
        "id": p["group"],
        "displayName": p["display_name"],
        "members": [{"value": m} for m in members],
    }
    label = f"PUT /Groups/{{id}} ({p['mode']})"
    await ctx.http(i, label, "PUT", f"/Groups/{p['group']}", body)


async def import_page(ctx: Context, i: int) -> None:
    """Page i of an Okta import: startIndex moves by `count` (reference §1.2 (2))."""
    total, count = ctx.params["total"], ctx.params["count"]
    path = f"/Users?startIndex={1 + i * count}&count={count}"
    page = await ctx.http(i, "GET /Users?startIndex&count", "GET", path)
    if page is not None:
        expected = min(count, total - i * count)
        ctx.check(
            page["totalResults"] == total and page["itemsPerPage"] == expected,
            "import: wrong page",
            f"page {i}: totalResults {page['totalResults']}, itemsPerPage {page['itemsPerPage']}",
        )


async def cursor_import_page(ctx: Context, i: int) -> None:
    """Page i of an import by cursor (RFC 9865): the first page asks with an
    empty cursor, each later one with the nextCursor of the page before
    (pages run one after the other, in order)."""
    total, count = ctx.params["total"], ctx.params["count"]
    cursor = ctx.state.get("next_cursor", "") if i else ""
    path = f"/Users?cursor={cursor}&count={count}"
    page = await ctx.http(i, "GET /Users?cursor&count", "GET", path)
    if page is not None:
        expected = min(count, total - i * count)
        ctx.check(
            page["totalResults"] == total and page["itemsPerPage"] == expected,
            "cursor import: wrong page",
            f"page {i}: totalResults {page['totalResults']}, itemsPerPage {page['itemsPerPage']}",
        )
        ctx.state["next_cursor"] = page.get("nextCursor", "")


async def push_user(ctx: Context, i: int) -> None:
    """Okta's first push of one user: look it up, then create it (§1.2 (3))."""
    name = f"push{i}.{ctx.params['run']}@bench.example"
    path = "/Users?" + _eq_filter("userName", name)
    found = await ctx.http(i, "GET /Users?filter (push)", "GET", path)
    if found is None:
        return
    ctx.check(found["totalResults"] == 0, "push: user already there", name)
    await ctx.http(
        i, "POST /Users (push)", "POST", "/Users", okta_user(name, f"push-{i}"), expect=(201,)
    )


async def push_group(ctx: Context, i: int) -> None:
    """Okta's push of one group: look it up, create it empty, then add its
    members in one PATCH (§1.2 (8) and (10))."""
    name = f"Push Group {i} {ctx.params['run']}"
    found = await ctx.http(
        i, "GET /Groups?filter (push)", "GET", "/Groups?" + _eq_filter("displayName", name)
    )
    if found is None:
        return
    ctx.check(found["totalResults"] == 0, "push: group already there", name)
    body = {"schemas": [GROUP_URN], "displayName": name, "members": []}
    created = await ctx.http(i, "POST /Groups (push)", "POST", "/Groups", body, expect=(201,))
    if created is None:
        return
    per_group, users = ctx.params["per_group"], ctx.params["users"]
    chosen = [users[(i * per_group + k) % len(users)] for k in range(per_group)]
    add = {
        "schemas": [PATCH_URN],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": u} for u in chosen]}],
    }
    path = f"/Groups/{created['id']}"
    await ctx.http(i, "PATCH add members (push)", "PATCH", path, add, expect=(200, 204))


JOBS: dict[str, Job] = {
    job.__name__: job
    for job in (
        empty_rpc,
        grpc_read,
        chain_echo,
        chain_write,
        chain_read,
        role,
        role_batch,
        deactivation,
        filter_user,
        get_user,
        create_user,
        replace_user,
        member_patch,
        replace_group,
        import_page,
        cursor_import_page,
        push_user,
        push_group,
    )
}
