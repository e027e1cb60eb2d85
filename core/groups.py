"""Groups and memberships: SQL, and the GroupService servicer.

Membership writes are row-level (INSERT … ON CONFLICT DO NOTHING, DELETE of
named rows) under the group's row lock, so concurrent changes lose nothing,
and a full member list replaces only the difference: its cost in writes grows
with what changed, not with the size of the group.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from core import audit, counts, documents, fields, listing, locking, patch, roles
from core.auth import Guard
from core.cursors import Cursors
from core.errors import AlreadyExists, InvalidArgument, TooMany
from core.organizations import parse_uuid
from core.representation import etag, group_proto, member_ref
from core.rpc import Ctx
from core.schema import group_schema
from core.tokens import Principal
from core.users import diff, operation
from wando.provisioning.v1 import group_service_pb2 as pb
from wando.provisioning.v1 import group_service_pb2_grpc, scim_pb2

if TYPE_CHECKING:
    from core.db import Conn

TABLE = listing.Table("groups", "group_id", group_schema())

# a group's member count, and its members as arrays in their order (ids,
# userNames, displayNames); {group} is the alias of the groups table in the
# statement
MEMBER_COUNT_COLUMNS = ", m.member_count"
MEMBER_COUNT_JOIN = """CROSS JOIN LATERAL (
    SELECT count(*) AS member_count FROM group_members m
    WHERE m.org_id = {group}.org_id AND m.group_id = {group}.group_id
) AS m"""
MEMBERS_COLUMNS = ", m.member_count, m.member_ids, m.member_user_names, m.member_display_names"
MEMBERS_JOIN = """CROSS JOIN LATERAL (
    SELECT count(*) AS member_count,
           array_agg(u.user_id ORDER BY m.created_at, m.user_id) AS member_ids,
           array_agg(u.user_name ORDER BY m.created_at, m.user_id) AS member_user_names,
           array_agg(u.display_name ORDER BY m.created_at, m.user_id) AS member_display_names
    FROM group_members m
    JOIN users u ON u.org_id = m.org_id AND u.user_id = m.user_id
    WHERE m.org_id = {group}.org_id AND m.group_id = {group}.group_id
) AS m"""

# a page of groups comes with their member counts, and their members unless
# excluded: one statement, so one snapshot without a transaction
COUNTED_TABLE = listing.Table(
    "groups",
    "group_id",
    TABLE.schema,
    extra_columns=MEMBER_COUNT_COLUMNS,
    extra_join=MEMBER_COUNT_JOIN.format(group="r"),  # core.listing's alias
)
WITH_MEMBERS_TABLE = listing.Table(
    "groups",
    "group_id",
    TABLE.schema,
    extra_columns=MEMBERS_COLUMNS,
    extra_join=MEMBERS_JOIN.format(group="r"),
)
DISPLAY_NAME_KEY = "groups_org_display_name_key"
MAX_MEMBERS_PER_REQUEST = 100_000

# the insert, the organisation's group count (core.counts) in slot $6, and
# the audit event (as audit.INSERT_EVENT; $7 the token, $8 the attributes
# given), in one statement
INSERT_GROUP = """
WITH inserted AS (
    INSERT INTO groups (org_id, group_id, display_name, external_id, attributes)
    VALUES ($1, $2, $3, $4, $5)
    RETURNING *
), counted AS (
    INSERT INTO resource_counts (org_id, resource, slot, n)
    SELECT org_id, 'groups', $6, 1 FROM inserted
    ON CONFLICT (org_id, resource, slot) DO UPDATE SET n = resource_counts.n + 1
), audited AS (
    INSERT INTO audit_events (org_id, token_id, actor, action, resource_type, resource_id, changed)
    SELECT $1, $7, 'scim', 'create', 'Group', $2::text, $8 FROM inserted
)
SELECT * FROM inserted
"""

SELECT_GROUP = "SELECT * FROM groups WHERE org_id = $1 AND group_id = $2"

# a group locked for a write
SELECT_GROUP_FOR_WRITE = "SELECT * FROM groups WHERE org_id = $1 AND group_id = $2 FOR UPDATE"

# the role a locked group is mapped to. Mappings change under the group's
# lock (core.role_mappings), so a statement that starts once the lock is held
# reads the mapping in force; the locking statement itself may not: under
# READ COMMITTED, a SELECT … FOR UPDATE that waited for a mapping's
# transaction re-reads only the locked row, not what it joins
SELECT_MAPPED_ROLE = "SELECT role FROM group_roles WHERE org_id = $1 AND group_id = $2"

# a locked group's new version and its audit event (as audit.INSERT_EVENT;
# $6 the token, $7 the action, $8 the attributes changed), in one statement
UPDATE_GROUP = """
WITH updated AS (
    UPDATE groups
    SET display_name = $3, external_id = $4, attributes = $5,
        version = version + 1, updated_at = clock_timestamp()
    WHERE org_id = $1 AND group_id = $2
    RETURNING *
), audited AS (
    INSERT INTO audit_events (org_id, token_id, actor, action, resource_type, resource_id, changed)
    SELECT $1, $6, 'scim', $7, 'Group', $2::text, $8 FROM updated
)
SELECT * FROM updated
"""

DELETE_GROUP = "DELETE FROM groups WHERE org_id = $1 AND group_id = $2"

# the member ids a statement adds ($3; $1 the organisation) as `wanted`, and
# those that are not users of the organisation as `unknown`: the member
# reference check both additions below make
_WANTED = """wanted AS (
    SELECT x.id FROM unnest($3::uuid[]) AS x(id)
), unknown AS (
    SELECT w.id FROM wanted w
    WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.org_id = $1 AND u.user_id = w.id)
)"""

# additions in one statement: nothing is added if any id is not a user of the
# organisation (those come back as "unknown"), else the ids that were not yet
# members come back as "added". $3 holds no id twice (member_uuids); rows go
# in its order, which is the members' order (created_at)
ADD_MEMBERS = f"""
WITH {_WANTED}, added AS (
    INSERT INTO group_members (org_id, group_id, user_id)
    SELECT $1, $2, w.id FROM wanted w
    WHERE NOT EXISTS (SELECT 1 FROM unknown)
    ON CONFLICT DO NOTHING
    RETURNING user_id
)
SELECT 'unknown' AS outcome, id FROM unknown
UNION ALL
SELECT 'added', user_id FROM added
"""

# additions as ADD_MEMBERS, and the locked group's new version with its
# audit event as UPDATE_GROUP, in one statement, if the group is mapped to no
# role (SELECT_MAPPED_ROLE): then nobody's role changes. Nothing is written
# if the group is mapped (its role comes back in `mapped_role`) or if an id
# is not a user of the organisation (they come back in `unknown`). The
# version is new if a member was added or the document changed: $9 names
# the attributes changed, $10 the same with members (each sorted). The new
# version's row comes back; its columns are NULL when nothing was written.
ADD_MEMBERS_AND_UPDATE = f"""
WITH mapped AS (
    SELECT r.role FROM group_roles r WHERE r.org_id = $1 AND r.group_id = $2
), {_WANTED}, added AS (
    INSERT INTO group_members (org_id, group_id, user_id)
    SELECT $1, $2, w.id FROM wanted w
    WHERE NOT EXISTS (SELECT 1 FROM unknown) AND NOT EXISTS (SELECT 1 FROM mapped)
    ON CONFLICT DO NOTHING
    RETURNING user_id
), updated AS (
    UPDATE groups
    SET display_name = $4, external_id = $5, attributes = $6,
        version = version + 1, updated_at = clock_timestamp()
    WHERE org_id = $1 AND group_id = $2
      AND NOT EXISTS (SELECT 1 FROM unknown) AND NOT EXISTS (SELECT 1 FROM mapped)
      AND (cardinality($9::text[]) > 0 OR EXISTS (SELECT 1 FROM added))
    RETURNING *
), audited AS (
    INSERT INTO audit_events (org_id, token_id, actor, action, resource_type, resource_id, changed)
    SELECT $1, $7, 'scim', $8, 'Group', $2::text,
           CASE WHEN EXISTS (SELECT 1 FROM added) THEN $10::text[] ELSE $9::text[] END
    FROM updated
)
SELECT (SELECT array_agg(k.id) FROM unknown k) AS unknown,
       (SELECT m.role FROM mapped m) AS mapped_role,
       u.*
FROM (SELECT) AS one
LEFT JOIN updated u ON true
"""

# removals, one primary-key probe per id whatever plan PostgreSQL caches for
# the statement; the ids that were members come back
REMOVE_MEMBERS = """
DELETE FROM group_members m
USING unnest($3::uuid[]) AS d(user_id)
WHERE m.org_id = $1 AND m.group_id = $2 AND m.user_id = d.user_id
RETURNING m.user_id
"""

# arrays up to this size run on whatever plan PostgreSQL caches; larger ones
# are planned for their size (custom_plans())
SMALL_ARRAY = 100

SELECT_MEMBER_IDS = "SELECT user_id FROM group_members WHERE org_id = $1 AND group_id = $2"

SELECT_MEMBERS = """
SELECT m.group_id, u.user_id, u.user_name, u.display_name
FROM group_members m
JOIN users u ON u.org_id = m.org_id AND u.user_id = m.user_id
WHERE m.org_id = $1 AND m.group_id = ANY($2::uuid[])
ORDER BY m.created_at, m.user_id
"""

COUNT_MEMBERS = """
SELECT m.group_id, count(*) AS n FROM group_members m
WHERE m.org_id = $1 AND m.group_id = ANY($2::uuid[])
GROUP BY m.group_id
"""


def columns(document: dict[str, Any]) -> tuple[str, str | None]:
    return document["displayName"], document.get("externalId")


def member_uuids(ids: list[str] | set[str], *, strict: bool) -> list[uuid.UUID]:
    """Member ids as UUIDs. With strict, an id that cannot be a user is an
    error naming it; without (removals), it simply matches nothing."""
    if len(ids) > MAX_MEMBERS_PER_REQUEST:
        raise TooMany(f"at most {MAX_MEMBERS_PER_REQUEST} members per request", field="members")
    parsed: list[uuid.UUID] = []
    bad: list[str] = []
    for raw in ids:
        value = parse_uuid(raw)
        if value is None:
            bad.append(raw)
        else:
            parsed.append(value)
    if bad and strict:
        raise _unknown_members(bad)
    return list(dict.fromkeys(parsed))


def _unknown_members(ids: list[str]) -> InvalidArgument:
    shown = ", ".join(repr(i) for i in ids[:5]) + (" …" if len(ids) > 5 else "")
    return InvalidArgument(
        f"members[].value must be ids of users of this organisation; unknown: {shown}",
        field="members",
    )


async def members_of(
    conn: Conn, org_id: uuid.UUID, group_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    found: dict[uuid.UUID, list[dict[str, Any]]] = {gid: [] for gid in group_ids}
    if group_ids:
        for row in await conn.fetch(SELECT_MEMBERS, org_id, group_ids):
            found[row["group_id"]].append(
                member_ref(row["user_id"], row["user_name"], row["display_name"])
            )
    return found


def listed_members(row: asyncpg.Record) -> list[dict[str, Any]]:
    """The members of a row read with MEMBERS_COLUMNS."""
    if not row["member_count"]:
        return []
    return [
        member_ref(user_id, user_name, display_name)
        for user_id, user_name, display_name in zip(
            row["member_ids"], row["member_user_names"], row["member_display_names"], strict=True
        )
    ]


async def member_counts(
    conn: Conn, org_id: uuid.UUID, group_ids: list[uuid.UUID]
) -> dict[uuid.UUID, int]:
    counts = dict.fromkeys(group_ids, 0)
    if group_ids:
        for row in await conn.fetch(COUNT_MEMBERS, org_id, group_ids):
            counts[row["group_id"]] = row["n"]
    return counts


@dataclass
class MemberPlan:
    """The rows a membership change writes: only the difference."""

    add: list[uuid.UUID]
    remove: list[uuid.UUID]

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


async def plan(
    conn: Conn, org_id: uuid.UUID, gid: uuid.UUID, changes: patch.MemberChanges
) -> MemberPlan:
    """The memberships `changes` adds and removes on a locked group: for a full
    list, only its difference from the current members. Whether the ids are
    users of the organisation is checked as they are added (add_members)."""
    if changes.replace is None:
        removed = member_uuids(changes.remove, strict=False)
        gone = set(removed)
        added = [i for i in member_uuids(changes.add, strict=True) if i not in gone]
        return MemberPlan(add=added, remove=removed)
    wanted = member_uuids(changes.replace, strict=True)
    # a full list: diff against the current members here, so that the
    # statements that write carry only what changes
    current = {r["user_id"] for r in await conn.fetch(SELECT_MEMBER_IDS, org_id, gid)}
    keep = set(wanted)
    return MemberPlan(
        add=[i for i in wanted if i not in current],
        remove=[i for i in current if i not in keep],
    )


async def custom_plans(conn: Conn) -> None:
    """For the rest of the transaction, plan each statement for the array it
    gets, never a cached generic plan made for another size: arrays of
    members range from one id to a whole group."""
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")


async def write_members(conn: Conn, org_id: uuid.UUID, gid: uuid.UUID, members: MemberPlan) -> bool:
    """Apply a plan to a locked group; returns whether any membership changed.
    Role changes are the caller's (see change_members)."""
    if len(members.add) + len(members.remove) > SMALL_ARRAY:
        await custom_plans(conn)
    changed = await add_members(conn, org_id, gid, members.add) if members.add else False
    if members.remove and await conn.fetch(REMOVE_MEMBERS, org_id, gid, members.remove):
        changed = True
    return changed


async def add_members(conn: Conn, org_id: uuid.UUID, gid: uuid.UUID, ids: list[uuid.UUID]) -> bool:
    """Add users to a locked group; returns whether any was not yet a member."""
    try:
        rows = await conn.fetch(ADD_MEMBERS, org_id, gid, ids)
    except asyncpg.ForeignKeyViolationError:  # a user deleted meanwhile
        raise _unknown_members([str(i) for i in ids]) from None
    unknown = [str(r["id"]) for r in rows if r["outcome"] == "unknown"]
    if unknown:
        raise _unknown_members(unknown)
    return bool(rows)


async def mapped_role(conn: Conn, org_id: uuid.UUID, gid: uuid.UUID) -> str | None:
    """The role a group locked by lock() is mapped to (SELECT_MAPPED_ROLE)."""
    role: str | None = await conn.fetchval(SELECT_MAPPED_ROLE, org_id, gid)
    return role


async def change_members(
    conn: Conn, org_id: uuid.UUID, gid: uuid.UUID, role: str | None, members: MemberPlan
) -> bool:
    """Write a membership change to a group locked by lock(), with its effect
    on roles when the group is mapped (to `role`). Returns whether anything
    changed."""
    if members.empty:
        return False
    tracker = None
    if role is not None:
        tracker = await roles.RoleTracker.start(conn, org_id, [*members.add, *members.remove])
    changed = await write_members(conn, org_id, gid, members)
    if tracker is not None:
        await tracker.finish("membership")
    return changed


def _conflict(exc: asyncpg.UniqueViolationError, document: dict[str, Any]) -> Exception:
    if exc.constraint_name == DISPLAY_NAME_KEY:
        return AlreadyExists(
            f"a group with displayName {document['displayName']!r} already exists",
            field="displayName",
        )
    return exc


async def lock(conn: Conn, principal: Principal, raw_id: str, expected_etag: str) -> asyncpg.Record:
    """A group's row, locked."""
    return await locking.lock(
        conn, SELECT_GROUP_FOR_WRITE, principal.org_id, raw_id, expected_etag, "group"
    )


async def insert(
    conn: Conn,
    principal: Principal,
    new_id: uuid.UUID,
    document: dict[str, Any],
    changed: list[str],
) -> asyncpg.Record:
    """A new group, counted and audited (INSERT_GROUP)."""
    try:
        row = await conn.fetchrow(
            INSERT_GROUP,
            principal.org_id,
            new_id,
            *columns(document),
            document,
            counts.slot(),
            principal.token_id,
            changed,
        )
    except asyncpg.UniqueViolationError as exc:
        raise _conflict(exc, document) from None
    assert row is not None
    return row


async def write(
    conn: Conn,
    principal: Principal,
    row: asyncpg.Record,
    document: dict[str, Any],
    action: str,
    changed: list[str],
) -> asyncpg.Record:
    """A new version of a locked group (its document, or just its membership),
    audited."""
    try:
        updated = await conn.fetchrow(
            UPDATE_GROUP,
            principal.org_id,
            row["group_id"],
            *columns(document),
            document,
            principal.token_id,
            action,
            sorted(changed),
        )
    except asyncpg.UniqueViolationError as exc:
        raise _conflict(exc, document) from None
    assert updated is not None
    return updated


async def add_and_write(
    conn: Conn,
    principal: Principal,
    row: asyncpg.Record,
    document: dict[str, Any],
    action: str,
    changed: list[str],
    add: list[uuid.UUID],
) -> tuple[asyncpg.Record, str | None]:
    """write() with members added, in one statement (ADD_MEMBERS_AND_UPDATE),
    if the locked group is mapped to no role. Returns the row with the new
    version, or as it was if nothing changed; its mapped_role when the group
    is mapped, and then nothing was written."""
    if len(add) > SMALL_ARRAY:
        await custom_plans(conn)
    try:
        found = await conn.fetchrow(
            ADD_MEMBERS_AND_UPDATE,
            principal.org_id,
            row["group_id"],
            add,
            *columns(document),
            document,
            principal.token_id,
            action,
            sorted(changed),
            sorted([*changed, "members"]),
        )
    except asyncpg.ForeignKeyViolationError:  # a user deleted meanwhile
        raise _unknown_members([str(i) for i in add]) from None
    except asyncpg.UniqueViolationError as exc:
        raise _conflict(exc, document) from None
    assert found is not None
    if found["unknown"]:
        raise _unknown_members([str(i) for i in found["unknown"]])
    if found["mapped_role"] is not None:
        return row, found["mapped_role"]
    return (row if found["group_id"] is None else found), None


class GroupService(group_service_pb2_grpc.GroupServiceServicer):
    def __init__(self, pool: asyncpg.Pool, guard: Guard, cursors: Cursors) -> None:
        self._pool = pool
        self._guard = guard
        self._cursors = cursors

    async def _reply(
        self, conn: Conn, principal: Principal, row: asyncpg.Record, exclude_members: bool
    ) -> Any:
        gid = row["group_id"]
        if exclude_members:
            count = (await member_counts(conn, principal.org_id, [gid]))[gid]
            return group_proto(row, None, count)
        members = (await members_of(conn, principal.org_id, [gid]))[gid]
        return group_proto(row, members, len(members))

    async def CreateGroup(
        self, request: pb.CreateGroupRequest, context: Ctx
    ) -> pb.CreateGroupResponse:
        principal = await self._guard.scim(context)
        body = fields.loads_object(request.group_json, "group_json")
        document = documents.normalize(TABLE.schema, body)
        wanted = documents.member_ids(body) or []
        changed = sorted([*document, *(["members"] if wanted else [])])
        new_id = uuid.uuid4()
        async with self._pool.acquire() as conn:
            if not wanted:  # one statement, so one transaction of its own
                row = await insert(conn, principal, new_id, document, changed)
                # the answer is the group as created: without members
                group = group_proto(row, None if request.exclude_members else [], 0)
            else:
                async with conn.transaction():
                    row = await insert(conn, principal, new_id, document, changed)
                    # a new group has no members yet, so all of these are
                    # added; and no role mapping yet, so no role changes
                    added = MemberPlan(add=member_uuids(wanted, strict=True), remove=[])
                    await write_members(conn, principal.org_id, new_id, added)
                    group = await self._reply(conn, principal, row, request.exclude_members)
        return pb.CreateGroupResponse(group=group, role_sequence=roles.SEQUENCE_PRODUCED.get())

    async def GetGroup(self, request: pb.GetGroupRequest, context: Ctx) -> pb.GetGroupResponse:
        principal = await self._guard.scim(context)
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            row = await locking.fetch(conn, SELECT_GROUP, principal.org_id, request.id, "group")
            group = await self._reply(conn, principal, row, request.exclude_members)
        return pb.GetGroupResponse(group=group)

    async def ListGroups(
        self, request: pb.ListGroupsRequest, context: Ctx
    ) -> pb.ListGroupsResponse:
        principal = await self._guard.scim(context)
        exclude = request.exclude_members
        async with self._pool.acquire() as conn:
            page = await listing.list_page(
                conn,
                COUNTED_TABLE if exclude else WITH_MEMBERS_TABLE,
                principal.org_id,
                request.query,
                self._cursors,
            )
        return pb.ListGroupsResponse(
            groups=[
                group_proto(r, None if exclude else listed_members(r), r["member_count"])
                for r in page.rows
            ],
            total_results=page.total,
            start_index=page.start_index,
            next_cursor=page.next_cursor,
            previous_cursor=page.previous_cursor,
        )

    async def ReplaceGroup(
        self, request: pb.ReplaceGroupRequest, context: Ctx
    ) -> pb.ReplaceGroupResponse:
        principal = await self._guard.scim(context)
        body = fields.loads_object(request.group_json, "group_json")
        document = documents.normalize(TABLE.schema, body)
        wanted = documents.member_ids(body)
        changes = patch.MemberChanges(replace=wanted)  # None: members stay as they are
        async with self._pool.acquire() as conn, conn.transaction():
            row = await lock(conn, principal, request.id, request.etag)
            row = await self._update(conn, principal, row, document, changes, "replace")
            group = await self._reply(conn, principal, row, request.exclude_members)
        return pb.ReplaceGroupResponse(group=group, role_sequence=roles.SEQUENCE_PRODUCED.get())

    async def PatchGroup(
        self, request: pb.PatchGroupRequest, context: Ctx
    ) -> pb.PatchGroupResponse:
        principal = await self._guard.scim(context)
        operations = [operation(op) for op in request.operations]
        async with self._pool.acquire() as conn, conn.transaction():
            row = await lock(conn, principal, request.id, request.etag)
            result = patch.apply(TABLE.schema, row["attributes"], operations)
            row = await self._update(conn, principal, row, result.document, result.members, "patch")
            if request.etag_only:  # no read of the membership: O(change), not O(group)
                return pb.PatchGroupResponse(
                    group=scim_pb2.Group(id=str(row["group_id"]), etag=etag(row["version"])),
                    role_sequence=roles.SEQUENCE_PRODUCED.get(),
                )
            group = await self._reply(conn, principal, row, request.exclude_members)
        return pb.PatchGroupResponse(group=group, role_sequence=roles.SEQUENCE_PRODUCED.get())

    async def _update(
        self,
        conn: Conn,
        principal: Principal,
        row: asyncpg.Record,
        document: dict[str, Any],
        members: patch.MemberChanges,
        action: str,
    ) -> asyncpg.Record:
        """Write a locked group's new document and membership; a new version
        only if something changed."""
        gid = row["group_id"]
        changed = diff(row["attributes"], document)
        wanted = await plan(conn, principal.org_id, gid, members)
        if wanted.add and not wanted.remove:
            # if the group is mapped to no role, nobody's role changes: the
            # additions and the new version in one statement
            written, role = await add_and_write(
                conn, principal, row, document, action, changed, wanted.add
            )
            if role is None:
                return written
        else:
            role = await mapped_role(conn, principal.org_id, gid)
        if await change_members(conn, principal.org_id, gid, role, wanted):
            changed.append("members")
        if changed:
            renamed = role is not None and columns(document)[0] != row["display_name"]
            row = await write(conn, principal, row, document, action, changed)
            if renamed:  # its members' answers name it (granted_by)
                await roles.record_organization_change(conn, principal.org_id, "group renamed")
        return row

    async def DeleteGroup(
        self, request: pb.DeleteGroupRequest, context: Ctx
    ) -> pb.DeleteGroupResponse:
        principal = await self._guard.scim(context)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await lock(conn, principal, request.id, request.etag)
            gid = row["group_id"]
            await counts.uncount(conn, principal.org_id, "groups")
            tracker = None
            if await mapped_role(conn, principal.org_id, gid) is not None:
                members = await roles.group_members(conn, principal.org_id, gid)
                tracker = await roles.RoleTracker.start(conn, principal.org_id, members)
            await conn.execute(DELETE_GROUP, principal.org_id, gid)
            if tracker is not None:
                await tracker.finish("group deleted")
            await audit.record(conn, principal, "delete", "Group", gid)
        return pb.DeleteGroupResponse(role_sequence=roles.SEQUENCE_PRODUCED.get())
