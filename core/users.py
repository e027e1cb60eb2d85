"""Users: SQL, and the UserService servicer (SCIM semantics on PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from core import audit, counts, documents, fields, listing, locking, patch, roles
from core.auth import Guard
from core.creations import Creation, Creations, RolesChanging
from core.cursors import Cursors
from core.errors import AlreadyExists, InvalidArgument, InvalidPath, Unavailable
from core.representation import group_ref, user_proto
from core.rpc import Ctx
from core.schema import user_schema
from core.tokens import Principal
from wando.provisioning.v1 import user_service_pb2 as pb
from wando.provisioning.v1 import user_service_pb2_grpc

if TYPE_CHECKING:
    from core.db import Conn


USER_NAME_KEY = "users_org_user_name_key"

# New users in one statement, so in one transaction and one round trip: a
# batch of creations of one organisation (core.creations gathers those that
# arrive while the previous batch is in PostgreSQL; usually one). For each
# user ($2..$7 and $13, $14 are arrays, one element per user, in the order of
# the batch; ordinals 1..n number them): its row, its email and role-value
# index rows ($9/$10 and $11/$12: each value with the ordinal of its user),
# the organisation's user count (core.counts; slot $8, once for the batch),
# its audit event (as audit.INSERT_EVENT; $13 the token, $14 the attributes
# changed, as the text of a JSON array), and its first role on the change
# stream (as roles.RECORD_CHANGES; it is in no group yet, so its role comes
# from its role values or the default role; the doorbell rings after commit:
# core.doorbell).
# The rule is effective_role() and top_role() of
# migrations/0007_effective_roles.sql; its grants are read from the mappings
# of the values it is sent with, as the view user_grants would read them once
# its rows are visible (rows inserted by a statement are not visible to the
# statement itself).
#
# A userName that is taken (by an earlier user, or by an earlier one in the
# batch) is skipped, not an error: that user alone gets no row back, and its
# creation fails with uniqueness (the others are written). The first row
# (in_force) says whether anything could be written at all.
#
# The roles are resolved in the statement's snapshot. The organisation's row,
# locked FOR SHARE, says whether that is still the role configuration in
# force (migrations/0005_roles_version.sql): if a change committed while the
# statement waited for the lock, nothing is written, in_force is false, and
# the caller runs the statement again. The role counter is taken last (lock
# order: core.roles), once for the batch, and held only while the statement
# commits.
INSERT_USERS = """
WITH org AS (
    SELECT o.org_id, o.roles_version FROM organizations o WHERE o.org_id = $1 FOR SHARE
), in_force AS (
    SELECT org.org_id FROM org
    WHERE org.roles_version = (SELECT s.roles_version FROM organizations s WHERE s.org_id = $1)
), sent AS (
    SELECT * FROM unnest(
        $2::uuid[], $3::text[], $4::text[], $5::text[], $6::boolean[], $7::jsonb[],
        $13::uuid[], $14::text[]
    ) WITH ORDINALITY
        AS s(user_id, user_name, external_id, display_name, active, attributes,
             token_id, changed, n)
), inserted AS (
    INSERT INTO users (org_id, user_id, user_name, external_id, display_name, active, attributes)
    SELECT f.org_id, s.user_id, s.user_name, s.external_id, s.display_name, s.active, s.attributes
    FROM in_force f, sent s ORDER BY s.n
    ON CONFLICT DO NOTHING
    RETURNING *
), kept AS (
    SELECT s.n, s.token_id, s.changed, i.user_id, i.active
    FROM inserted i JOIN sent s USING (user_id)
), counted AS (
    INSERT INTO resource_counts (org_id, resource, slot, n)
    SELECT $1, 'users', $8, count(*) FROM kept HAVING count(*) > 0
    ON CONFLICT (org_id, resource, slot) DO UPDATE SET n = resource_counts.n + EXCLUDED.n
    RETURNING 1
), emails AS (
    INSERT INTO user_emails (org_id, user_id, value_lower)
    SELECT $1, k.user_id, lower(e.v)
    FROM kept k JOIN unnest($9::int[], $10::text[]) AS e(n, v) ON e.n = k.n
    ON CONFLICT DO NOTHING
), role_values AS (
    INSERT INTO user_role_values (org_id, user_id, value)
    SELECT $1, k.user_id, r.v
    FROM kept k JOIN unnest($11::int[], $12::text[]) AS r(n, v) ON r.n = k.n
    ON CONFLICT DO NOTHING
), audited AS (
    INSERT INTO audit_events (org_id, token_id, actor, action, resource_type, resource_id, changed)
    SELECT $1, k.token_id, 'scim', 'create', 'User', k.user_id::text,
           ARRAY(SELECT jsonb_array_elements_text(k.changed::jsonb))
    FROM kept k ORDER BY k.n
), resolved AS (
    SELECT k.n, k.user_id, effective_role(
        k.active,
        (SELECT top_role(vm.role) FROM role_value_mappings vm
         WHERE vm.org_id = $1
           AND vm.value IN (SELECT r.v FROM unnest($11::int[], $12::text[]) AS r(n, v)
                            WHERE r.n = k.n)),
        (SELECT o.default_role FROM organizations o WHERE o.org_id = $1)
    ) AS role
    FROM kept k
), numbered AS (
    SELECT r.user_id, r.role, row_number() OVER (ORDER BY r.n) AS k
    FROM resolved r WHERE r.role IS NOT NULL
), advanced AS (
    UPDATE role_counters SET last_seq = last_seq + (SELECT count(*) FROM numbered)
    WHERE org_id = $1 AND EXISTS (SELECT 1 FROM numbered)
      -- the count slot first, as the lock order says (core.roles): a CTE that
      -- nothing reads runs after the outer query, which reads this one
      AND EXISTS (SELECT 1 FROM counted)
    RETURNING last_seq - (SELECT count(*) FROM numbered) AS before
), recorded AS (
    INSERT INTO role_changes (org_id, seq, user_id, old_role, new_role, cause)
    SELECT $1, a.before + r.k, r.user_id, NULL, r.role, 'user created'
    FROM advanced a, numbered r
)
SELECT f.in_force, i.*,
       coalesce((SELECT a.before + r.k FROM advanced a, numbered r WHERE r.user_id = i.user_id),
                0) AS role_sequence
FROM (SELECT EXISTS (SELECT 1 FROM in_force) AS in_force) f
LEFT JOIN inserted i ON true
"""

# a creation that met a role configuration change this many times in a row
# gives up (as UNAVAILABLE: retry)
CREATE_ATTEMPTS = 5

# a user's groups, as two arrays in their order (ids, displayNames); {user}
# is the alias of the users table in the statement
GROUPS_COLUMNS = ", g.group_ids, g.group_names"
GROUPS_JOIN = """CROSS JOIN LATERAL (
    SELECT array_agg(g.group_id ORDER BY g.display_name, g.group_id) AS group_ids,
           array_agg(g.display_name ORDER BY g.display_name, g.group_id) AS group_names
    FROM group_members m
    JOIN groups g ON g.org_id = m.org_id AND g.group_id = m.group_id
    WHERE m.org_id = {user}.org_id AND m.user_id = {user}.user_id
) AS g"""

# a user with its groups, in one round trip (GET /Users/{id}); with
# FOR_UPDATE, the user's row locked for a write (its groups are not locked)
SELECT_USER_WITH_GROUPS = f"""
SELECT u.*{GROUPS_COLUMNS}
FROM users u
{GROUPS_JOIN.format(user="u")}
WHERE u.org_id = $1 AND u.user_id = $2
"""

# a page of users comes with their groups, as a single user does
TABLE = listing.Table(
    "users",
    "user_id",
    user_schema(),
    extra_columns=GROUPS_COLUMNS,
    extra_join=GROUPS_JOIN.format(user="r"),  # core.listing's alias
)

FOR_UPDATE = " FOR UPDATE OF u"

# a user's new document in one statement: the row, the email and role-value
# index rows when they change ($8, $9: the new sets; NULL when unchanged) and
# the audit event (as audit.INSERT_EVENT; $10 the token, $11 the action, $12
# the attributes changed). With $13, only if the user is still at that
# version (an optimistic write: no row comes back, and nothing is written,
# if another write came first); with $13 NULL, the user is locked already.
UPDATE_USER = """
WITH updated AS (
    UPDATE users
    SET user_name = $3, external_id = $4, display_name = $5, active = $6, attributes = $7,
        version = version + 1, updated_at = clock_timestamp()
    WHERE org_id = $1 AND user_id = $2 AND ($13::bigint IS NULL OR version = $13)
    RETURNING *
), emails_gone AS (
    DELETE FROM user_emails e
    WHERE e.org_id = $1 AND e.user_id = $2 AND $8::text[] IS NOT NULL
      AND e.value_lower <> ALL (SELECT lower(v) FROM unnest($8::text[]) AS v)
      AND EXISTS (SELECT 1 FROM updated)
), emails_new AS (
    INSERT INTO user_emails (org_id, user_id, value_lower)
    SELECT $1, $2, lower(v) FROM unnest($8::text[]) AS v
    WHERE EXISTS (SELECT 1 FROM updated)
    ON CONFLICT DO NOTHING
), values_gone AS (
    DELETE FROM user_role_values r
    WHERE r.org_id = $1 AND r.user_id = $2 AND $9::text[] IS NOT NULL
      AND r.value <> ALL ($9::text[])
      AND EXISTS (SELECT 1 FROM updated)
), values_new AS (
    INSERT INTO user_role_values (org_id, user_id, value)
    SELECT $1, $2, v FROM unnest($9::text[]) AS v
    WHERE EXISTS (SELECT 1 FROM updated)
    ON CONFLICT DO NOTHING
), audited AS (
    INSERT INTO audit_events (org_id, token_id, actor, action, resource_type, resource_id, changed)
    SELECT $1, $10, 'scim', $11, 'User', $2::text, $12 FROM updated
)
SELECT * FROM updated
"""

# optimistic writes of one user that met a concurrent write this many times
# in a row are made under the row lock instead
OPTIMISTIC_ATTEMPTS = 3

DELETE_USER = "DELETE FROM users WHERE org_id = $1 AND user_id = $2"


def columns(document: dict[str, Any]) -> tuple[str, str | None, str | None, bool]:
    """The indexed copies of a document's attributes: userName, externalId,
    displayName, and the user's effective activity (see active)."""
    return (
        document["userName"],
        document.get("externalId"),
        document.get("displayName"),
        active(document),
    )


def active(document: dict[str, Any]) -> bool:
    """Whether the user is active, for roles: only an `active` of true says so.
    An unassigned `active` (a PATCH removed it) is inactive, so removing the
    attribute can never give a deactivated user their access back (README,
    Roles)."""
    return document.get("active") is True


def email_keys(document: dict[str, Any]) -> list[str]:
    emails = document.get("emails") or []
    # lower-cased by PostgreSQL (INSERT_EMAILS), as filters compare with lower($n)
    return sorted({e["value"] for e in emails if isinstance(e.get("value"), str)})


def role_values(document: dict[str, Any]) -> list[str]:
    """The `roles[].value`s that role-value mappings match, exactly
    (case-sensitive). Entra's PATCH of app-role assignments sends each value
    as a JSON-encoded object ('{"id": …, "value": "Admin", "displayName": …}');
    the entry is stored as sent, and its inner value is what is matched."""
    entries = document.get("roles") or []
    found = {_role_value(e.get("value")) for e in entries if isinstance(e, dict)}
    return sorted(v for v in found if v)


def _role_value(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    if value.startswith("{"):
        try:
            inner = json.loads(value)
        except ValueError:
            return value
        if isinstance(inner, dict) and isinstance(inner.get("value"), str):
            return str(inner["value"])
    return value


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


async def lock(conn: Conn, principal: Principal, raw_id: str, expected_etag: str) -> asyncpg.Record:
    """A user's row, locked, with its groups (group_ids, group_names)."""
    return await locking.lock(
        conn, SELECT_USER_WITH_GROUPS + FOR_UPDATE, principal.org_id, raw_id, expected_etag, "user"
    )


def group_refs(row: asyncpg.Record) -> list[dict[str, Any]]:
    """The group references of a SELECT_USER_WITH_GROUPS row."""
    pairs = zip(row["group_ids"] or [], row["group_names"] or [], strict=True)
    return [group_ref(*pair) for pair in pairs]


async def write(
    conn: Conn,
    principal: Principal,
    row: asyncpg.Record,
    document: dict[str, Any],
    action: str,
    changed: list[str],
    *,
    if_version: int | None = None,
) -> asyncpg.Record | None:
    """Store a new document for a user, keeping the email and role-value
    indexes in step, and audit it: for a locked user, or with if_version only
    if the user is still at that version (else None, and nothing written)."""
    emails, values = email_keys(document), role_values(document)
    old = row["attributes"]
    try:
        updated: asyncpg.Record | None = await conn.fetchrow(
            UPDATE_USER,
            principal.org_id,
            row["user_id"],
            *columns(document),
            document,
            emails if emails != email_keys(old) else None,
            values if values != role_values(old) else None,
            principal.token_id,
            action,
            sorted(changed),
            if_version,
        )
    except asyncpg.UniqueViolationError as exc:
        raise _conflict(exc, document) from None
    return updated


def changes(row: asyncpg.Record, document: dict[str, Any]) -> list[str]:
    """The attributes `document` changes over the user's `row`."""
    return diff(row["attributes"], document)


def stored(row: asyncpg.Record) -> dict[str, Any]:
    """A user's document. Every write stores `active` in it unless a PATCH
    removed it (then the user is inactive); a row written by other means (SQL
    seeding) that is active without saying so is read as `active: true`, so
    that a later write does not take its access away."""
    document: dict[str, Any] = row["attributes"]
    if "active" not in document and row["active"]:
        return {**document, "active": True}
    return document


def replacement(row: asyncpg.Record, document: dict[str, Any]) -> dict[str, Any]:
    """The document a PUT of `document` stores over `row`: one that says nothing
    about `active` leaves it as it is (assigned or not), as IdPs that PUT
    profile updates without it expect."""
    new = dict(document)
    current = stored(row)
    if "active" not in new and "active" in current:
        new["active"] = current["active"]
    return new


def moves_role(row: asyncpg.Record, document: dict[str, Any]) -> bool:
    """Whether writing `document` over `row` can change the user's answer from
    RoleService (their role, why, or their userName), which the change stream
    then records (core.roles.RoleTracker)."""
    return (
        active(document) != row["active"]
        or role_values(document) != role_values(row["attributes"])
        or document["userName"] != row["user_name"]
    )


def _conflict(exc: asyncpg.UniqueViolationError, document: dict[str, Any]) -> Exception:
    if exc.constraint_name == USER_NAME_KEY:
        return AlreadyExists(
            f"a user with userName {document['userName']!r} already exists", field="userName"
        )
    return exc


class UserService(user_service_pb2_grpc.UserServiceServicer):
    def __init__(self, pool: asyncpg.Pool, guard: Guard, cursors: Cursors) -> None:
        self._pool = pool
        self._guard = guard
        self._cursors = cursors
        self._creations = Creations(pool, INSERT_USERS, CREATE_ATTEMPTS)

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Ctx
    ) -> pb.CreateUserResponse:
        principal = await self._guard.scim(context)
        document = documents.normalize(
            TABLE.schema, fields.loads_object(request.user_json, "user_json")
        )
        document.setdefault("active", True)
        user_name, external_id, display_name, is_active = columns(document)
        creation = Creation(
            user_id=uuid.uuid4(),
            user_name=user_name,
            external_id=external_id,
            display_name=display_name,
            active=is_active,
            document=document,
            emails=email_keys(document),
            role_values=role_values(document),
            token_id=principal.token_id,
            changed=sorted(document),
        )
        try:
            row = await self._creations.create(principal.org_id, creation)
        except RolesChanging:
            raise Unavailable(
                "the organisation's role mappings are changing; retry shortly"
            ) from None
        if row is None:
            raise AlreadyExists(
                f"a user with userName {user_name!r} already exists", field="userName"
            )
        if row["role_sequence"]:
            roles.produced_by_this_call(principal.org_id, row["role_sequence"])
        return pb.CreateUserResponse(user=user_proto(row, []), role_sequence=row["role_sequence"])

    async def GetUser(self, request: pb.GetUserRequest, context: Ctx) -> pb.GetUserResponse:
        principal = await self._guard.scim(context)
        async with self._pool.acquire() as conn:
            row = await locking.fetch(
                conn, SELECT_USER_WITH_GROUPS, principal.org_id, request.id, "user"
            )
        return pb.GetUserResponse(user=user_proto(row, group_refs(row)))

    async def ListUsers(self, request: pb.ListUsersRequest, context: Ctx) -> pb.ListUsersResponse:
        principal = await self._guard.scim(context)
        async with self._pool.acquire() as conn:
            page = await listing.list_page(
                conn, TABLE, principal.org_id, request.query, self._cursors
            )
        return pb.ListUsersResponse(
            users=[user_proto(r, group_refs(r)) for r in page.rows],
            total_results=page.total,
            start_index=page.start_index,
            next_cursor=page.next_cursor,
            previous_cursor=page.previous_cursor,
        )

    async def ReplaceUser(
        self, request: pb.ReplaceUserRequest, context: Ctx
    ) -> pb.ReplaceUserResponse:
        principal = await self._guard.scim(context)
        document = documents.normalize(
            TABLE.schema, fields.loads_object(request.user_json, "user_json")
        )
        row, updated = await self._store(
            principal, request.id, request.etag, lambda row: replacement(row, document), "replace"
        )
        return pb.ReplaceUserResponse(
            user=user_proto(updated, group_refs(row)),
            role_sequence=roles.SEQUENCE_PRODUCED.get(),
        )

    async def PatchUser(self, request: pb.PatchUserRequest, context: Ctx) -> pb.PatchUserResponse:
        principal = await self._guard.scim(context)
        operations = [operation(op) for op in request.operations]
        row, updated = await self._store(
            principal,
            request.id,
            request.etag,
            lambda row: patch.apply(TABLE.schema, stored(row), operations).document,
            "patch",
        )
        return pb.PatchUserResponse(
            user=user_proto(updated, group_refs(row)),
            role_sequence=roles.SEQUENCE_PRODUCED.get(),
        )

    async def _store(
        self,
        principal: Principal,
        raw_id: str,
        etag: str,
        new_document: Callable[[asyncpg.Record], dict[str, Any]],
        action: str,
    ) -> tuple[asyncpg.Record, asyncpg.Record]:
        """Write the document `new_document` makes of a user's current row;
        returns the row read (with its groups) and the row written.

        Optimistically first: read, then one conditional write that is its own
        transaction, so no lock is held across round trips. Under the row lock
        when the write can change the user's role (the role stream needs its
        before and after: core.roles), or after OPTIMISTIC_ATTEMPTS concurrent
        writes came first."""
        async with self._pool.acquire() as conn:
            for _ in range(OPTIMISTIC_ATTEMPTS):
                row = await locking.fetch_at_version(
                    conn, SELECT_USER_WITH_GROUPS, principal.org_id, raw_id, etag, "user"
                )
                document = new_document(row)
                changed = changes(row, document)
                if not changed:
                    return row, row
                if moves_role(row, document):
                    break
                written = await write(
                    conn, principal, row, document, action, changed, if_version=row["version"]
                )
                if written is not None:
                    return row, written
            async with conn.transaction():
                row = await lock(conn, principal, raw_id, etag)
                updated = await self._update(conn, principal, row, new_document(row), action)
            return row, updated

    async def _update(
        self,
        conn: Conn,
        principal: Principal,
        row: asyncpg.Record,
        document: dict[str, Any],
        action: str,
    ) -> asyncpg.Record:
        """Store a locked user's new document; a new version only if something
        changed, and the role stream told when `active` or the role values change."""
        changed = changes(row, document)
        if not changed:
            return row
        tracker = None
        flipped = active(document) != row["active"]
        if moves_role(row, document):
            tracker = await roles.RoleTracker.start(conn, principal.org_id, [row["user_id"]])
        updated = await write(conn, principal, row, document, action, changed)
        assert updated is not None  # the user is locked
        if tracker is not None:
            if flipped:
                cause = "user deactivated" if row["active"] else "user activated"
            elif role_values(document) != role_values(row["attributes"]):
                cause = "roles attribute changed"
            else:
                cause = "userName changed"
            await tracker.finish(cause)
        return updated

    async def DeleteUser(
        self, request: pb.DeleteUserRequest, context: Ctx
    ) -> pb.DeleteUserResponse:
        principal = await self._guard.scim(context)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await lock(conn, principal, request.id, request.etag)
            await counts.uncount(conn, principal.org_id, "users")
            tracker = await roles.RoleTracker.start(conn, principal.org_id, [row["user_id"]])
            await conn.execute(DELETE_USER, principal.org_id, row["user_id"])
            await tracker.finish("user deleted")
            await audit.record(conn, principal, "delete", "User", row["user_id"])
        return pb.DeleteUserResponse(role_sequence=roles.SEQUENCE_PRODUCED.get())


def operation(message: Any) -> patch.Operation:
    """A proto PatchOperation as the PATCH engine takes it."""
    if len(message.op) > patch.MAX_OP_LENGTH:
        raise InvalidArgument(
            f'a PATCH operation\'s "op" is longer than {patch.MAX_OP_LENGTH} characters',
            field="op",
        )
    if len(message.path) > patch.MAX_PATH_LENGTH:
        raise InvalidPath(
            f'a PATCH operation\'s "path" is longer than {patch.MAX_PATH_LENGTH} characters',
            field="path",
        )
    has_value = bool(message.value_json)
    return patch.Operation(
        op=message.op,
        path=message.path,
        value=fields.loads(message.value_json, "value_json") if has_value else None,
        has_value=has_value,
    )
