"""Drill: tenant isolation (issue #8, item 5).

Property: a token of one organisation never reads, finds, counts, changes or
deletes anything of another, and another organisation's ids answer exactly like
ids that do not exist — so an attacker cannot even learn that an id is real.

Set-up, from a seeded generator (WANDO_TENANCY_SEED to replay one; the seed is
printed): ORGS organisations, each with users and groups whose userNames,
externalIds and displayNames partly coincide *on purpose* across organisations
(Okta tenants reuse the same people and group names), and partly are their own.
Then, for every ordered (attacker, victim) pair, every SCIM endpoint through the
gateway over HTTP, the SCIM RPCs, and the org-scoped RoleService and AdminService
calls, each asked once with a victim's id (or name) and once with a random one
that exists nowhere. The two answers must be the same byte for byte once the
asked-for value is replaced by a placeholder (status, headers except Date and
X-Request-Id, body); every list and count must be exactly the attacker's own;
and afterwards every row of every organisation is as it was.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc

from common.wirejson import dumps
from core.server import CoreServer
from tests.drills import snapshot
from tests.drills.report import heavy, report
from tests.gateway.support import Reply, ScimHttp, gateway, gateway_settings
from tests.scim_client import Scim, okta_user, ops
from tests.support import ADMIN, SERVICE, new_org_with_token
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import admin_service_pb2_grpc, roles_pb2, scim_pb2
from wando.provisioning.v1 import group_service_pb2 as gpb
from wando.provisioning.v1 import group_service_pb2_grpc as ggrpc
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import role_service_pb2_grpc as rgrpc
from wando.provisioning.v1 import user_service_pb2 as upb
from wando.provisioning.v1 import user_service_pb2_grpc as ugrpc

ORGS = 6 if heavy() else 3
OWN_USERS = 6 if heavy() else 2
# in every organisation: the same people, the same group names
SHARED_PEOPLE = ["ada.lovelace@shared.example", "alan.turing@shared.example"]
SHARED_GROUPS = ["Everyone", "Engineering"]
PLACEHOLDER = "<asked>"
PER_REPLY_HEADERS = {"date", "x-request-id", "content-length"}


@dataclass
class Org:
    slug: str
    org_id: str
    token: str
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> resource
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)

    def user_names(self) -> set[str]:
        return {u["userName"] for u in self.users.values()}


async def populate(rng: random.Random, admin: Any, channel: grpc.aio.Channel) -> list[Org]:
    orgs = []
    for n in range(ORGS):
        slug = f"tenant-{n}"
        org_id, token = await new_org_with_token(admin, slug)
        org = Org(slug, org_id, token)
        scim = Scim(channel, token)
        names = [*SHARED_PEOPLE]
        names += [f"{slug}.person{i}@{rng.choice(['a', 'b'])}.example" for i in range(OWN_USERS)]
        for name in names:
            # shared people carry the same externalId everywhere (okta_user derives it)
            user = await scim.create_user(okta_user(name))
            org.users[user["id"]] = user
        ids = list(org.users)
        for name in [*SHARED_GROUPS, f"Team {slug}"]:
            members = [{"value": i} for i in rng.sample(ids, rng.randint(1, len(ids)))]
            group = await scim.create_group({"displayName": name, "members": members})
            org.groups[group["id"]] = group
        orgs.append(org)
    return orgs


def normalised(reply: Reply, *asked: str) -> tuple[int, list[tuple[str, str]], str]:
    text = reply.text
    for value in asked:
        text = text.replace(value, PLACEHOLDER).replace(json.dumps(value)[1:-1], PLACEHOLDER)
    headers = sorted(
        (k.lower(), v) for k, v in reply.headers.items() if k.lower() not in PER_REPLY_HEADERS
    )
    return reply.status, headers, text


@dataclass
class Tally:
    compared: int = 0
    listed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def saw(self, kind: str, status: object) -> None:
        key = f"{kind}:{status}"
        self.statuses[key] = self.statuses.get(key, 0) + 1


HttpProbe = Callable[[ScimHttp, str], Awaitable[Reply]]


def http_probes(attacker: Org, victim_user_name: str) -> dict[str, tuple[HttpProbe, str]]:
    """Name → (request with the asked-for value, what the value is)."""
    own_group = next(iter(attacker.groups))
    own_user = next(iter(attacker.users))
    put_user = okta_user("taken.over@attacker.example")
    return {
        "GET user": (lambda s, v: s.get(f"/Users/{v}"), "user"),
        "PUT user": (lambda s, v: s.put(f"/Users/{v}", put_user), "user"),
        "PATCH user": (
            lambda s, v: s.patch(
                f"/Users/{v}", {"op": "replace", "path": "active", "value": False}
            ),
            "user",
        ),
        "DELETE user": (lambda s, v: s.delete(f"/Users/{v}"), "user"),
        "GET group": (lambda s, v: s.get(f"/Groups/{v}"), "group"),
        "PUT group": (lambda s, v: s.put(f"/Groups/{v}", {"displayName": "Taken"}), "group"),
        "PATCH group": (
            lambda s, v: s.patch(
                f"/Groups/{v}", {"op": "add", "path": "members", "value": [{"value": own_user}]}
            ),
            "group",
        ),
        "DELETE group": (lambda s, v: s.delete(f"/Groups/{v}"), "group"),
        "filter users by id": (lambda s, v: s.get(f'/Users?filter=id eq "{v}"'), "user"),
        "search users by id": (
            lambda s, v: s.post("/Users/.search", {"filter": f'id eq "{v}"'}),
            "user",
        ),
        "filter groups by id": (lambda s, v: s.get(f'/Groups?filter=id eq "{v}"'), "group"),
        "filter groups by member": (
            lambda s, v: s.get(f'/Groups?filter=members.value eq "{v}"'),
            "user",
        ),
        "search groups by member": (
            lambda s, v: s.post("/Groups/.search", {"filter": f'members.value eq "{v}"'}),
            "user",
        ),
        "filter users by victim-only userName": (
            lambda s, v: s.get(f'/Users?filter=userName eq "{v}"'),
            "user_name",
        ),
        "add victim's user to own group": (
            lambda s, v: s.patch(
                f"/Groups/{own_group}", {"op": "add", "path": "members", "value": [{"value": v}]}
            ),
            "user",
        ),
        "PUT own group with victim's member": (
            lambda s, v: s.put(
                f"/Groups/{own_group}",
                {
                    "displayName": attacker.groups[own_group]["displayName"],
                    "members": [{"value": v}],
                },
            ),
            "user",
        ),
        "create group with victim's member": (
            lambda s, v: s.post("/Groups", {"displayName": "Stolen", "members": [{"value": v}]}),
            "user",
        ),
    }


async def attack_over_http(
    http: ScimHttp, attacker: Org, victim: Org, rng: random.Random, tally: Tally
) -> None:
    victim_user = rng.choice(list(victim.users))
    victim_group = rng.choice(list(victim.groups))
    only_victims = sorted(victim.user_names() - attacker.user_names())
    asked = {
        "user": (victim_user, str(uuid.UUID(int=rng.getrandbits(128), version=4))),
        "group": (victim_group, str(uuid.UUID(int=rng.getrandbits(128), version=4))),
        "user_name": (rng.choice(only_victims), f"nobody{rng.randrange(10**6)}@b.example"),
    }
    for name, (probe, kind) in http_probes(attacker, asked["user_name"][0]).items():
        real, fake = asked[kind]
        victims = normalised(await probe(http, real), real)
        nowhere = normalised(await probe(http, fake), fake)
        assert victims == nowhere, (name, attacker.slug, victim.slug, victims, nowhere)
        tally.compared += 1
        tally.saw("http", victims[0])


async def check_lists(http: ScimHttp, attacker: Org, tally: Tally) -> None:
    """Every list and count is exactly the attacker's own."""
    own_users, own_groups = set(attacker.users), set(attacker.groups)
    queries: list[tuple[str, set[str]]] = [
        ("/Users?count=1000", own_users),
        ("/Groups?count=1000&excludedAttributes=members", own_groups),
        (
            '/Users?count=1000&filter=userName sw "a"',
            {i for i, u in attacker.users.items() if u["userName"].startswith("a")},
        ),
        (
            '/Users?count=1000&filter=userName co "shared"',
            {i for i, u in attacker.users.items() if "shared" in u["userName"]},
        ),
    ]
    for person in SHARED_PEOPLE:
        mine = {i for i, u in attacker.users.items() if u["userName"] == person}
        external = next(attacker.users[i]["externalId"] for i in mine)
        queries.append((f'/Users?filter=userName eq "{person}"', mine))
        queries.append((f'/Users?filter=externalId eq "{external}"', mine))
        queries.append((f'/Users?filter=emails.value eq "{person}"', mine))
    for name in SHARED_GROUPS:
        mine = {i for i, g in attacker.groups.items() if g["displayName"] == name}
        queries.append((f'/Groups?filter=displayName eq "{name}"', mine))
    member = next(iter(own_users))
    queries.append(
        (
            f'/Groups?filter=members.value eq "{member}"',
            {i for i, g in attacker.groups.items() if member in {m["value"] for m in g["members"]}},
        )
    )
    for query, expected in queries:
        reply = await http.get(query)
        ids = {r["id"] for r in reply.assert_list()}
        assert ids == expected, (attacker.slug, query, ids - expected, expected - ids)
        assert reply.body["totalResults"] == len(expected), (attacker.slug, query)
        tally.listed += 1
    searched = await http.post("/Users/.search", {"count": 1000})
    assert {r["id"] for r in searched.assert_list()} == own_users
    assert searched.body["totalResults"] == len(own_users)


def error_of(exc: grpc.aio.AioRpcError, *asked: str) -> tuple[str, str, bytes]:
    details = exc.details() or ""
    for value in asked:
        details = details.replace(value, PLACEHOLDER)
    trailers = b"".join(
        v if isinstance(v, bytes) else v.encode() for _, v in exc.trailing_metadata() or ()
    )
    return exc.code().name, details, trailers


async def outcome(call: Awaitable[Any], *asked: str) -> object:
    """A call's error, normalised, or a marker of what it returned."""
    try:
        result = await call
    except grpc.aio.AioRpcError as exc:
        return error_of(exc, *asked)
    return ("OK", str(result).replace(asked[0], PLACEHOLDER) if asked else str(result))


async def attack_over_grpc(
    channel: grpc.aio.Channel,
    attacker: Org,
    victim: Org,
    rng: random.Random,
    tally: Tally,
) -> None:
    md = (("authorization", f"Bearer {attacker.token}"),)
    users, groups = ugrpc.UserServiceStub(channel), ggrpc.GroupServiceStub(channel)
    roles, admin = rgrpc.RoleServiceStub(channel), admin_service_pb2_grpc.AdminServiceStub(channel)
    victim_user_id = rng.choice(list(victim.users))
    victim_user = victim.users[victim_user_id]
    victim_group = rng.choice(list(victim.groups))
    own_group = next(iter(attacker.groups))
    body = dumps(okta_user("taken.over@attacker.example"))
    patch = ops({"op": "replace", "path": "active", "value": False})
    org = attacker.slug

    def selector(kind: str, value: str) -> rpb.UserSelector:
        return rpb.UserSelector(**{kind: value})

    by_user: dict[str, Callable[[str], Awaitable[Any]]] = {
        "GetUser": lambda v: users.GetUser(upb.GetUserRequest(id=v), metadata=md),
        "ReplaceUser": lambda v: users.ReplaceUser(
            upb.ReplaceUserRequest(id=v, user_json=body), metadata=md
        ),
        "PatchUser": lambda v: users.PatchUser(
            upb.PatchUserRequest(id=v, operations=patch), metadata=md
        ),
        "DeleteUser": lambda v: users.DeleteUser(upb.DeleteUserRequest(id=v), metadata=md),
        "ListUsers id eq": lambda v: users.ListUsers(
            upb.ListUsersRequest(query=scim_pb2.ListQuery(filter=f'id eq "{v}"')), metadata=md
        ),
        "PatchGroup add member": lambda v: groups.PatchGroup(
            gpb.PatchGroupRequest(
                id=own_group,
                operations=ops({"op": "add", "path": "members", "value": [{"value": v}]}),
            ),
            metadata=md,
        ),
        "CreateGroup with member": lambda v: groups.CreateGroup(
            gpb.CreateGroupRequest(
                group_json=dumps({"displayName": "Stolen", "members": [{"value": v}]})
            ),
            metadata=md,
        ),
        "RoleService by user_id": lambda v: roles.GetEffectiveRole(
            rpb.GetEffectiveRoleRequest(organization=org, user=selector("user_id", v)),
            metadata=SERVICE,
        ),
        "RoleService batch": lambda v: roles.BatchGetEffectiveRoles(
            rpb.BatchGetEffectiveRolesRequest(organization=org, users=[selector("user_id", v)]),
            metadata=SERVICE,
        ),
    }
    by_group: dict[str, Callable[[str], Awaitable[Any]]] = {
        "GetGroup": lambda v: groups.GetGroup(gpb.GetGroupRequest(id=v), metadata=md),
        "ReplaceGroup": lambda v: groups.ReplaceGroup(
            gpb.ReplaceGroupRequest(id=v, group_json=dumps({"displayName": "Taken"})), metadata=md
        ),
        "PatchGroup": lambda v: groups.PatchGroup(
            gpb.PatchGroupRequest(id=v, operations=ops({"op": "remove", "path": "members"})),
            metadata=md,
        ),
        "DeleteGroup": lambda v: groups.DeleteGroup(gpb.DeleteGroupRequest(id=v), metadata=md),
        "AdminService SetGroupRole": lambda v: admin.SetGroupRole(
            apb.SetGroupRoleRequest(organization=org, group=v, role=roles_pb2.ROLE_ADMIN),
            metadata=ADMIN,
        ),
        "AdminService ClearGroupRole": lambda v: admin.ClearGroupRole(
            apb.ClearGroupRoleRequest(organization=org, group=v), metadata=ADMIN
        ),
    }
    fake_id = lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))  # noqa: E731
    cases = [(n, c, victim_user_id, fake_id()) for n, c in by_user.items()]
    cases += [(n, c, victim_group, fake_id()) for n, c in by_group.items()]
    mine = attacker.user_names()
    if victim_user["userName"] not in mine:
        for kind, value in (
            ("user_name", victim_user["userName"]),
            ("email", victim_user["userName"]),
        ):
            call = lambda v, k=kind: roles.GetEffectiveRole(  # noqa: E731
                rpb.GetEffectiveRoleRequest(organization=org, user=selector(k, v)), metadata=SERVICE
            )
            cases.append(
                (f"RoleService by {kind}", call, value, f"nobody{rng.randrange(10**6)}@b.example")
            )
        external = victim_user.get("externalId", "")
        if external not in {u.get("externalId") for u in attacker.users.values()}:
            call = lambda v: roles.GetEffectiveRole(  # noqa: E731
                rpb.GetEffectiveRoleRequest(organization=org, user=selector("external_id", v)),
                metadata=SERVICE,
            )
            cases.append(("RoleService by external_id", call, external, "00unobody000000"))
    for name, call, real, fake in cases:
        victims = await outcome(call(real), real)
        nowhere = await outcome(call(fake), fake)
        assert victims == nowhere, (name, attacker.slug, victim.slug, victims, nowhere)
        tally.compared += 1
        tally.saw("grpc", victims[0] if isinstance(victims, tuple) else victims)


async def test_no_organisation_sees_or_touches_another(
    core: CoreServer, channel: grpc.aio.Channel, pool: asyncpg.Pool
) -> None:
    seed = int(os.environ.get("WANDO_TENANCY_SEED") or random.SystemRandom().randrange(10**9))
    print(f"\nWANDO_TENANCY_SEED={seed}")
    rng = random.Random(seed)
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    orgs = await populate(rng, admin, channel)
    before = {o.slug: await snapshot.org_rows(pool, o.org_id) for o in orgs}
    tally = Tally()
    settings = gateway_settings(f"127.0.0.1:{core.port}", WANDO_RATE_LIMIT_PER_SECOND="0")
    async with gateway(settings) as client:
        pairs = [(a, v) for a in orgs for v in orgs if a is not v]
        rng.shuffle(pairs)
        for attacker, victim in pairs:
            http = ScimHttp(client, attacker.token)
            await attack_over_http(http, attacker, victim, rng, tally)
            await attack_over_grpc(channel, attacker, victim, rng, tally)
        for org in orgs:
            await check_lists(ScimHttp(client, org.token), org, tally)
    for org in orgs:
        assert await snapshot.org_rows(pool, org.org_id) == before[org.slug], org.slug
    report(
        "tenancy.isolation",
        seed=seed,
        organisations=len(orgs),
        pairs=len(pairs),
        compared_pairs_of_answers=tally.compared,
        lists_checked=tally.listed,
        answers=dict(sorted(tally.statuses.items())),
    )
