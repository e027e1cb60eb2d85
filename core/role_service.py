"""RoleService: effective roles for Wando's own services (read-only)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import asyncpg

from core import organizations, paging, roles
from core.auth import Guard
from core.errors import InvalidArgument, NotFound, TooMany, VersionMismatch
from core.notifier import RoleNotifier
from core.organizations import parse_uuid, timestamp
from core.rpc import Ctx
from wando.provisioning.v1 import role_service_pb2 as pb
from wando.provisioning.v1 import role_service_pb2_grpc, roles_pb2

if TYPE_CHECKING:
    from core.db import Conn

MAX_BATCH = 1000
WATCH_BATCH = 500

BY_SELECTOR = {
    "user_id": "u.user_id = $2::uuid",
    "user_name": "lower(u.user_name) = lower($2)",
    "external_id": "u.external_id = $2",
    "email": (
        "u.user_id IN (SELECT e.user_id FROM user_emails e"
        " WHERE e.org_id = $1 AND e.value_lower = lower($2))"
    ),
}

# every way of naming users at once; each branch is answered from its index
BY_ANY_SELECTOR = """u.user_id IN (
    SELECT user_id FROM users WHERE org_id = $1 AND user_id = ANY($2::uuid[])
    UNION SELECT user_id FROM users WHERE org_id = $1 AND lower(user_name) = ANY($3::text[])
    UNION SELECT user_id FROM users WHERE org_id = $1 AND external_id = ANY($4::text[])
    UNION SELECT user_id FROM user_emails WHERE org_id = $1 AND value_lower = ANY($5::text[])
)"""

SELECT_EMAILS = """
SELECT user_id, value_lower FROM user_emails WHERE org_id = $1 AND user_id = ANY($2::uuid[])
"""

SELECT_SEQ = "SELECT last_seq FROM role_counters WHERE org_id = $1"

# a page of users, in id order, whose effective role is $3 (NULL: none)
SELECT_USERS_BY_ROLE = """
SELECT u.user_id FROM effective_roles u
WHERE u.org_id = $1 AND u.user_id > $2 AND u.role IS NOT DISTINCT FROM $3
ORDER BY u.user_id
LIMIT $4
"""

SELECT_CHANGES = """
SELECT seq, user_id, old_role, new_role, cause, occurred_at FROM role_changes
WHERE org_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3
"""


def selector(message: pb.UserSelector) -> tuple[str, str]:
    kind = message.WhichOneof("selector")
    if kind is None or not getattr(message, kind):
        raise InvalidArgument(
            "name the user by user_id, user_name, external_id or email", field="user"
        )
    return kind, getattr(message, kind)


class RoleService(role_service_pb2_grpc.RoleServiceServicer):
    def __init__(self, pool: asyncpg.Pool, guard: Guard, notifier: RoleNotifier) -> None:
        self._pool = pool
        self._guard = guard
        self._notifier = notifier
        self._orgs: dict[str, uuid.UUID] = {}  # id or slug -> id; neither ever changes

    async def _org(self, conn: Conn, ref: str) -> uuid.UUID:
        found = self._orgs.get(ref)
        if found is None:
            found = (await organizations.resolve(conn, ref))["org_id"]
            if len(self._orgs) > 100_000:
                self._orgs.clear()
            self._orgs[ref] = found
        return found

    async def GetEffectiveRole(
        self, request: pb.GetEffectiveRoleRequest, context: Ctx
    ) -> pb.GetEffectiveRoleResponse:
        self._guard.service(context)
        kind, value = selector(request.user)
        if kind == "user_id" and parse_uuid(value) is None:
            raise NotFound(f"no user with id {value!r}", field="user")
        async with self._pool.acquire() as conn:
            org_id = await self._org(conn, request.organization)
            sql = roles.RESOLVE_SQL.format(where=BY_SELECTOR[kind])
            rows = await conn.fetch(sql, org_id, parse_uuid(value) if kind == "user_id" else value)
        resolved = roles.resolve_rows(rows)
        if not resolved:
            raise NotFound(f"no user with {kind} {value!r}", field="user")
        if len(resolved) > 1:
            raise VersionMismatch(
                f"{len(resolved)} users have {kind} {value!r}; name the user by id", field="user"
            )
        (only,) = resolved.values()
        return pb.GetEffectiveRoleResponse(role=only.to_proto(), sequence=rows[0]["seq"])

    async def BatchGetEffectiveRoles(
        self, request: pb.BatchGetEffectiveRolesRequest, context: Ctx
    ) -> pb.BatchGetEffectiveRolesResponse:
        self._guard.service(context)
        if len(request.users) > MAX_BATCH:
            raise TooMany(f"at most {MAX_BATCH} users per batch", field="users")
        wanted = [selector(u) for u in request.users]
        ids = [i for k, v in wanted if k == "user_id" and (i := parse_uuid(v)) is not None]
        names = [v.lower() for k, v in wanted if k == "user_name"]
        external = [v for k, v in wanted if k == "external_id"]
        emails = [v.lower() for k, v in wanted if k == "email"]
        async with self._pool.acquire() as conn:
            org_id = await self._org(conn, request.organization)
            sql = roles.RESOLVE_SQL.format(where=BY_ANY_SELECTOR)
            rows = await conn.fetch(sql, org_id, ids, names, external, emails)
            by_email: dict[str, list[uuid.UUID]] = {}
            if emails:
                found_ids = list({r["user_id"] for r in rows})
                for row in await conn.fetch(SELECT_EMAILS, org_id, found_ids):
                    by_email.setdefault(row["value_lower"], []).append(row["user_id"])
            sequence = rows[0]["seq"] if rows else await conn.fetchval(SELECT_SEQ, org_id)
        resolved = roles.resolve_rows(rows)
        index: dict[tuple[str, str], list[uuid.UUID]] = {}
        for row in rows:
            for key in (
                ("user_id", str(row["user_id"])),
                ("user_name", row["user_name"].lower()),
                ("external_id", row["external_id"] or ""),
            ):
                index.setdefault(key, []).append(row["user_id"])
        for email, users in by_email.items():
            index[("email", email)] = users
        entries = []
        for kind, value in wanted:
            lookup: str = value.lower() if kind in ("user_name", "email") else value
            if kind == "user_id":
                parsed = parse_uuid(value)
                lookup = str(parsed) if parsed else value
            matches = list(dict.fromkeys(index.get((kind, lookup), [])))
            if len(matches) == 1:
                entries.append(pb.BatchEntry(found=True, role=resolved[matches[0]].to_proto()))
            else:
                entries.append(pb.BatchEntry(found=False))
        return pb.BatchGetEffectiveRolesResponse(entries=entries, sequence=sequence or 0)

    async def ListUsersByRole(
        self, request: pb.ListUsersByRoleRequest, context: Ctx
    ) -> pb.ListUsersByRoleResponse:
        self._guard.service(context)
        if request.role not in roles.FROM_PROTO:
            raise InvalidArgument("unknown role", field="role")
        size = paging.page_size(request.page_size)
        position = paging.decode(request.page_token)
        after = parse_uuid(str(position.get("u", ""))) if position else uuid.UUID(int=0)
        if after is None:
            raise InvalidArgument("page_token is not one this server issued", field="page_token")
        async with self._pool.acquire() as conn:
            org_id = await self._org(conn, request.organization)
            role = roles.FROM_PROTO[request.role]
            rows = await conn.fetch(SELECT_USERS_BY_ROLE, org_id, after, role, size + 1)
            page = [r["user_id"] for r in rows[:size]]
            resolved = await roles.resolve(conn, org_id, page)
        next_token = paging.encode({"u": str(page[-1])}) if len(rows) > size else ""
        return pb.ListUsersByRoleResponse(
            users=[resolved[i].to_proto() for i in page if i in resolved],
            next_page_token=next_token,
        )

    async def WatchRoleChanges(
        self, request: pb.WatchRoleChangesRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchRoleChangesResponse]:
        self._guard.service(context)
        if request.after_sequence < 0:
            raise InvalidArgument("after_sequence must not be negative", field="after_sequence")
        async with self._pool.acquire() as conn:
            org_id = await self._org(conn, request.organization)
        last = request.after_sequence
        while True:
            wake = await self._notifier.event(org_id)
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(SELECT_CHANGES, org_id, last, WATCH_BATCH)
            for row in rows:
                yield pb.WatchRoleChangesResponse(change=change_proto(org_id, row))
                last = row["seq"]
            if len(rows) < WATCH_BATCH:
                await self._notifier.wait(wake)


def change_proto(org_id: uuid.UUID, row: Any) -> roles_pb2.RoleChange:
    return roles_pb2.RoleChange(
        organization_id=str(org_id),
        sequence=row["seq"],
        user_id=str(row["user_id"]),
        old_role=roles.TO_PROTO[row["old_role"]],
        new_role=roles.TO_PROTO[row["new_role"]],
        cause=row["cause"],
        change_time=timestamp(row["occurred_at"]),
    )
