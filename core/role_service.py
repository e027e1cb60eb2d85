"""RoleService: effective roles for Wando's own services (read-only)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import Histogram

from core import organizations, paging, roles
from core.auth import Guard
from core.errors import (
    FellBehind,
    InvalidArgument,
    NotFound,
    OutOfRange,
    TooMany,
    Unavailable,
    VersionMismatch,
)
from core.notifier import PING_SECONDS, POLL_SECONDS, RoleNotifier
from core.organizations import parse_uuid, timestamp
from core.role_cache import RoleCache
from core.rpc import Ctx
from wando.provisioning.v1 import role_service_pb2 as pb
from wando.provisioning.v1 import role_service_pb2_grpc, roles_pb2

MAX_BATCH = 1000
WATCH_BATCH = 500

STREAM_LAG = Histogram(
    "wando_role_stream_lag_seconds",
    "From a role change's commit to its delivery on a WatchRoleChanges stream",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
# selectors the cache answers (unique keys: it cannot tell, from the outbox,
# when another user starts sharing an externalId or an email)
CACHED_SELECTORS = ("user_id", "user_name")
# Consistency.requirement values that the cache answers as it stands (unset: the default)
MINIMIZE_LATENCY = (None, "minimize_latency")

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


@dataclass(frozen=True)
class RoleOptions:
    """The RoleService's cache and stream settings (common.config: WANDO_ROLE_CACHE_*,
    WANDO_WATCH_MAX_LAG); the intervals are core.notifier's."""

    cache_max_entries: int = 100_000
    cache_max_bytes: int = 128 * 1024 * 1024
    watch_max_lag: int = 100_000
    poll_seconds: float = POLL_SECONDS
    ping_seconds: float = PING_SECONDS


def consistency(message: pb.Consistency) -> tuple[str, int]:
    """The requirement (minimize_latency when unset) and, for
    at_least_as_fresh, the sequence."""
    kind = message.WhichOneof("requirement") or "minimize_latency"
    if kind == "at_least_as_fresh":
        if message.at_least_as_fresh < 0:
            raise InvalidArgument(
                "at_least_as_fresh must not be negative", field="consistency.at_least_as_fresh"
            )
        return kind, message.at_least_as_fresh
    return kind, 0


class RoleService(role_service_pb2_grpc.RoleServiceServicer):
    def __init__(
        self, pool: asyncpg.Pool, guard: Guard, notifier: RoleNotifier, options: RoleOptions
    ) -> None:
        self._pool = pool
        self._guard = guard
        self._notifier = notifier
        self._options = options
        self._orgs: dict[str, uuid.UUID] = {}  # id or slug -> id; neither ever changes
        self._ending = False
        self.cache = RoleCache(
            pool,
            notifier,
            max_entries=options.cache_max_entries,
            max_bytes=options.cache_max_bytes,
            poll_seconds=options.poll_seconds,
        )

    def end_watches(self) -> None:
        """End every WatchRoleChanges stream with UNAVAILABLE, at the start of
        a shutdown: a stream would otherwise hold the drain for its whole
        grace period, and its watcher resumes on another core from the last
        sequence it received."""
        self._ending = True
        self._notifier.wake_all()

    async def _org(self, ref: str) -> uuid.UUID:
        found = self._orgs.get(ref)
        if found is None:
            async with self._pool.acquire() as conn:
                found = (await organizations.resolve(conn, ref))["org_id"]
            if len(self._orgs) > 100_000:
                self._orgs.clear()
            self._orgs[ref] = found
        return found

    async def _from_cache(self, org_id: uuid.UUID, message: pb.Consistency) -> tuple[bool, int]:
        """Whether the cache may answer, and the sequence the answer must reflect."""
        kind, sequence = consistency(message)
        if kind == "minimize_latency":
            return True, 0
        if kind == "at_least_as_fresh":
            return await self.cache.fresh(org_id, sequence), sequence
        return False, 0

    async def _read_one(
        self, org_id: uuid.UUID, kind: str, value: str
    ) -> tuple[roles_pb2.EffectiveRole, int]:
        """One user's answer from the database, and the sequence it reflects."""
        sql = roles.RESOLVE_SQL.format(where=BY_SELECTOR[kind])
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(sql, org_id, parse_uuid(value) if kind == "user_id" else value)
        resolved = roles.resolve_rows(rows)
        if not resolved:
            raise NotFound(f"no user with {kind} {value!r}", field="user")
        if len(resolved) > 1:
            raise VersionMismatch(
                f"{len(resolved)} users have {kind} {value!r}; name the user by id", field="user"
            )
        (only,) = resolved.values()
        sequence: int = rows[0]["seq"]
        return only.to_proto(), sequence

    async def GetEffectiveRole(
        self, request: pb.GetEffectiveRoleRequest, context: Ctx
    ) -> pb.GetEffectiveRoleResponse:
        self._guard.service(context)
        value = request.user.user_id  # the usual selector, read without WhichOneof
        kind, value = ("user_id", value) if value else selector(request.user)
        user_id = None
        if kind == "user_id":
            user_id = parse_uuid(value)
            if user_id is None:
                raise NotFound(f"no user with id {value!r}", field="user")
        org_id = self._orgs.get(request.organization) or await self._org(request.organization)
        cached = kind in CACHED_SELECTORS
        if cached and request.consistency.WhichOneof("requirement") in MINIMIZE_LATENCY:
            # the hot path (every Wando request): the replica's cache, in
            # memory, no await; a miss goes on as any other read
            key = user_id if user_id is not None else self.cache.user_id(org_id, kind, value)
            hit = self.cache.peek_encoded(org_id, key)
            if hit is not None:
                response = pb.GetEffectiveRoleResponse(sequence=hit[1])
                response.role.MergeFromString(hit[0])  # decoded in place, not copied
                return response
            at_least, read = 0, self.cache.fill  # peeked already
        else:
            allowed, at_least = await self._from_cache(org_id, request.consistency)
            cached, read = cached and allowed, self.cache.get
        if user_id is not None:
            value = str(user_id)
        if cached:
            answer, sequence = await read(
                org_id, kind, value, lambda: self._read_one(org_id, kind, value), at_least
            )
        else:
            ticket = self.cache.ticket(org_id) if kind in CACHED_SELECTORS else None
            answer, sequence = await self._read_one(org_id, kind, value)
            self.cache.put(org_id, ticket, [answer], sequence)
        return pb.GetEffectiveRoleResponse(role=answer, sequence=sequence)

    async def BatchGetEffectiveRoles(
        self, request: pb.BatchGetEffectiveRolesRequest, context: Ctx
    ) -> pb.BatchGetEffectiveRolesResponse:
        self._guard.service(context)
        if len(request.users) > MAX_BATCH:
            raise TooMany(f"at most {MAX_BATCH} users per batch", field="users")
        wanted = [selector(u) for u in request.users]
        org_id = await self._org(request.organization)
        cached, _ = await self._from_cache(org_id, request.consistency)
        answers: list[roles_pb2.EffectiveRole | None] = [None] * len(wanted)
        sequences = []
        if cached:
            for i, (kind, value) in enumerate(wanted):
                if kind in CACHED_SELECTORS:
                    hit = self.cache.peek(org_id, kind, _normal(kind, value))
                    if hit is not None:
                        answers[i], sequence = hit
                        sequences.append(sequence)
        missing = [i for i, answer in enumerate(answers) if answer is None]
        if missing or not sequences:
            ticket = self.cache.ticket(org_id)
            read, sequence = await self._read_batch(org_id, [wanted[i] for i in missing])
            for i, answer in zip(missing, read, strict=True):
                answers[i] = answer
            self.cache.put(org_id, ticket, [a for a in read if a is not None], sequence)
            sequences.append(sequence)
        entries = [
            pb.BatchEntry(found=True, role=a) if a is not None else pb.BatchEntry(found=False)
            for a in answers
        ]
        return pb.BatchGetEffectiveRolesResponse(entries=entries, sequence=min(sequences))

    async def _read_batch(
        self, org_id: uuid.UUID, wanted: list[tuple[str, str]]
    ) -> tuple[list[roles_pb2.EffectiveRole | None], int]:
        """Answers from the database in one round trip (None: no such user, or
        several), and the sequence they reflect."""
        ids = [i for k, v in wanted if k == "user_id" and (i := parse_uuid(v)) is not None]
        names = [v.lower() for k, v in wanted if k == "user_name"]
        external = [v for k, v in wanted if k == "external_id"]
        emails = [v.lower() for k, v in wanted if k == "email"]
        async with self._pool.acquire() as conn:
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
        protos = {user_id: r.to_proto() for user_id, r in resolved.items()}
        answers: list[roles_pb2.EffectiveRole | None] = []
        for kind, value in wanted:
            matches = list(dict.fromkeys(index.get((kind, _normal(kind, value)), [])))
            answers.append(protos[matches[0]] if len(matches) == 1 else None)
        return answers, sequence or 0

    async def ListUsersByRole(
        self, request: pb.ListUsersByRoleRequest, context: Ctx
    ) -> pb.ListUsersByRoleResponse:
        self._guard.service(context)
        if request.role not in roles.FROM_PROTO:
            raise InvalidArgument("unknown role", field="role")
        consistency(request.consistency)  # validated; every page is read from the database
        size = paging.page_size(request.page_size)
        position = paging.decode(request.page_token)
        after = parse_uuid(str(position.get("u", ""))) if position else uuid.UUID(int=0)
        if after is None:
            raise InvalidArgument("page_token is not one this server issued", field="page_token")
        org_id = await self._org(request.organization)
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            role = roles.FROM_PROTO[request.role]
            rows = await conn.fetch(SELECT_USERS_BY_ROLE, org_id, after, role, size + 1)
            page = [r["user_id"] for r in rows[:size]]
            resolved = await roles.resolve(conn, org_id, page)
            sequence = await conn.fetchval(SELECT_SEQ, org_id)
        next_token = paging.encode({"u": str(page[-1])}) if len(rows) > size else ""
        return pb.ListUsersByRoleResponse(
            users=[resolved[i].to_proto() for i in page if i in resolved],
            next_page_token=next_token,
            sequence=sequence or 0,
        )

    async def WatchRoleChanges(
        self, request: pb.WatchRoleChangesRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchRoleChangesResponse]:
        """Pulled from the outbox a batch at a time, each sent before the next
        is read: a slow watcher holds at most one batch (and gRPC's flow
        control window), never an unbounded buffer; one that is more than
        watch_max_lag changes behind is cut off (FellBehind)."""
        self._guard.service(context)
        if request.after_sequence < 0:
            raise InvalidArgument("after_sequence must not be negative", field="after_sequence")
        org_id = await self._org(request.organization)
        last = request.after_sequence
        latest = await self._latest(org_id)
        if last > latest:
            raise OutOfRange(
                f"after_sequence {last} is beyond the organisation's latest change ({latest})",
                field="after_sequence",
            )
        self._check_lag(latest, last)
        while True:
            if self._ending:
                raise Unavailable(
                    "this core is shutting down; watch on another with after_sequence"
                    " = the last sequence received"
                )
            wake = await self._notifier.event(org_id)
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(SELECT_CHANGES, org_id, last, WATCH_BATCH)
            for row in rows:
                yield pb.WatchRoleChangesResponse(change=change_proto(org_id, row))
                STREAM_LAG.observe(max(0.0, time.time() - row["occurred_at"].timestamp()))
                last = row["seq"]
            if len(rows) == WATCH_BATCH:
                self._check_lag(await self._latest(org_id), last)
                continue
            if rows:
                await self._notifier.wait(wake)
                continue
            if not await self._notifier.wait(wake):  # idle: a checkpoint
                latest = await self._latest(org_id)
                if latest == last:
                    yield pb.WatchRoleChangesResponse(checkpoint_sequence=latest)

    async def _latest(self, org_id: uuid.UUID) -> int:
        async with self._pool.acquire() as conn:
            latest: int | None = await conn.fetchval(SELECT_SEQ, org_id)
        return latest or 0

    def _check_lag(self, latest: int, last: int) -> None:
        if latest - last > self._options.watch_max_lag:
            raise FellBehind(
                f"the watcher is {latest - last} changes behind (at most"
                f" {self._options.watch_max_lag}); reload, then watch from the reload's sequence",
                field="after_sequence",
            )


def _normal(kind: str, value: str) -> str:
    """A selector's value as the indexes hold it."""
    if kind in ("user_name", "email"):
        return value.lower()
    if kind == "user_id":
        parsed = parse_uuid(value)
        return str(parsed) if parsed else value
    return value


def change_proto(org_id: uuid.UUID, row: Any) -> roles_pb2.RoleChange:
    return roles_pb2.RoleChange(
        organization_id=str(org_id),
        sequence=row["seq"],
        user_id=str(row["user_id"]) if row["user_id"] else "",
        old_role=roles.TO_PROTO[row["old_role"]],
        new_role=roles.TO_PROTO[row["new_role"]],
        cause=row["cause"],
        change_time=timestamp(row["occurred_at"]),
    )
