"""SCIM filters and sortBy compiled to SQL (core.filters), run on real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from core.errors import InvalidArgument, InvalidFilter
from core.filters import Params, compile_filter, sort_expression
from core.schema import ENTERPRISE_URN, ResourceSchema, group_schema, user_schema

USERS = user_schema()
GROUPS = group_schema()
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class Org:
    """One organisation's rows, and filters run against them."""

    pool: asyncpg.Pool
    org_id: uuid.UUID
    names: dict[uuid.UUID, str]  # user or group id -> userName or displayName

    async def user(
        self,
        user_name: str,
        *,
        external_id: str | None = None,
        display_name: str | None = None,
        active: bool = True,
        created: datetime = T0,
        modified: datetime | None = None,
        **document: Any,
    ) -> uuid.UUID:
        user_id = uuid.uuid4()
        document = {"userName": user_name, **document}
        if external_id is not None:
            document["externalId"] = external_id
        if display_name is not None:
            document["displayName"] = display_name
        document["active"] = active
        await self.pool.execute(
            """
            INSERT INTO users (org_id, user_id, user_name, external_id, display_name, active,
                               attributes, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            self.org_id,
            user_id,
            user_name,
            external_id,
            display_name,
            active,
            document,
            created,
            modified or created,
        )
        emails = document.get("emails")
        emails = emails if isinstance(emails, list) else []
        values = {e["value"].lower() for e in emails if isinstance(e.get("value"), str)}
        await self.pool.executemany(
            "INSERT INTO user_emails (org_id, user_id, value_lower) VALUES ($1, $2, $3)",
            [(self.org_id, user_id, v) for v in values],
        )
        self.names[user_id] = user_name
        return user_id

    async def group(
        self, display_name: str, members: Sequence[uuid.UUID] = (), external_id: str | None = None
    ) -> uuid.UUID:
        group_id = uuid.uuid4()
        document = {"displayName": display_name}
        await self.pool.execute(
            "INSERT INTO groups (org_id, group_id, display_name, external_id, attributes)"
            " VALUES ($1, $2, $3, $4, $5)",
            self.org_id,
            group_id,
            display_name,
            external_id,
            document,
        )
        await self.pool.executemany(
            "INSERT INTO group_members (org_id, group_id, user_id) VALUES ($1, $2, $3)",
            [(self.org_id, group_id, m) for m in members],
        )
        self.names[group_id] = display_name
        return group_id

    async def find(self, text: str, schema: ResourceSchema = USERS) -> set[str]:
        """Names of the resources the filter matches."""
        table, key = ("users", "user_id") if schema is USERS else ("groups", "group_id")
        params = Params(self.org_id)
        where = compile_filter(schema, text, params)
        rows = await self.pool.fetch(
            f"SELECT {key} FROM {table} r WHERE r.org_id = $1 AND ({where})", *params.values
        )
        return {self.names[row[key]] for row in rows}

    async def sorted(self, sort_by: str, *, descending: bool = False) -> list[str]:
        key = sort_expression(USERS, sort_by)
        direction = "DESC" if descending else "ASC"
        rows = await self.pool.fetch(
            f"SELECT user_id FROM users r WHERE r.org_id = $1"
            f" ORDER BY {key} {direction} NULLS LAST, lower(r.user_name)",
            self.org_id,
        )
        return [self.names[row["user_id"]] for row in rows]


async def new_org(pool: asyncpg.Pool, slug: str = "acme") -> Org:
    org_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO organizations (org_id, slug, display_name) VALUES ($1, $2, $3)",
        org_id,
        slug,
        slug,
    )
    return Org(pool, org_id, {})


@pytest.fixture
async def org(pool: asyncpg.Pool) -> Org:
    return await new_org(pool)


def compiled(text: str, schema: ResourceSchema = USERS) -> tuple[str, list[Any]]:
    params = Params("org")
    sql = compile_filter(schema, text, params)
    return sql, params.values[1:]


# ---- the SQL of the hot paths, exactly


def test_hot_paths_compile_to_their_indexed_form() -> None:
    assert compiled('userName eq "BJensen"') == ("lower(r.user_name) = lower($2)", ["BJensen"])
    assert compiled('USERNAME EQ "x"') == ("lower(r.user_name) = lower($2)", ["x"])
    assert compiled('displayName eq "Admins"', GROUPS) == (
        "lower(r.display_name) = lower($2)",
        ["Admins"],
    )
    assert compiled('externalId eq "00u1"') == ("r.external_id = $2", ["00u1"])
    assert compiled('externalId eq "x"', GROUPS) == ("r.external_id = $2", ["x"])
    email = (
        "r.user_id IN (SELECT e.user_id FROM user_emails e"
        " WHERE e.org_id = r.org_id AND e.value_lower = lower($2))"
    )
    assert compiled('emails.value eq "a@x.org"') == (email, ["a@x.org"])
    assert compiled('emails[value eq "a@x.org"]') == (email, ["a@x.org"])
    assert compiled('emails eq "a@x.org"') == (email, ["a@x.org"])
    sql, values = compiled('emails[type eq "work"].value eq "a@x.org"')
    assert sql.startswith(email + " AND EXISTS (")
    assert values == ["a@x.org", "work", "a@x.org"]
    sql, values = compiled(f'members[value eq "{uuid.UUID(int=1)}"]', GROUPS)
    assert "m.user_id = $2::uuid" in sql and "JOIN" not in sql


def test_values_only_travel_as_parameters() -> None:
    evil = "x' OR 1=1 --"
    for text in (
        f'userName eq "{evil}"',
        f'name.familyName co "{evil}"',
        f'emails[type eq "{evil}"]',
        f'members.display sw "{evil}"',
    ):
        schema = GROUPS if text.startswith("members") else USERS
        sql, values = compiled(text, schema)
        assert "OR 1=1" not in sql and any("OR 1=1" in v for v in values)


# ---- operators and their case rules


async def test_string_operators_without_regard_to_case(org: Org) -> None:
    await org.user("BJensen")
    await org.user("alice")
    await org.user("Bob_Smith")
    assert await org.find('userName eq "bjensen"') == {"BJensen"}
    assert await org.find('userName ne "BJENSEN"') == {"alice", "Bob_Smith"}
    assert await org.find('userName co "JEN"') == {"BJensen"}
    assert await org.find('userName sw "b"') == {"BJensen", "Bob_Smith"}
    assert await org.find('userName ew "SEN"') == {"BJensen"}
    # code point order of the lower-cased values: "alice" < "bjensen" < "bob_smith"
    assert await org.find('userName gt "BJENSEN"') == {"Bob_Smith"}
    assert await org.find('userName ge "bjensen"') == {"BJensen", "Bob_Smith"}
    assert await org.find('userName lt "B"') == {"alice"}
    assert await org.find('userName le "Bjensen"') == {"alice", "BJensen"}
    # "_" sorts after letters' upper case but before lower case, by code point
    assert await org.find('userName gt "bob_"') == {"Bob_Smith"}
    assert await org.find('userName lt "bob`"') == {"alice", "BJensen", "Bob_Smith"}


async def test_case_exact_attributes(org: Org) -> None:
    a = await org.user("a", external_id="Ext-1")
    await org.user("b", external_id="ext-1")
    await org.user("c")
    assert await org.find('externalId eq "Ext-1"') == {"a"}
    assert await org.find('externalId ne "Ext-1"') == {"b", "c"}  # absent: ne holds
    assert await org.find('externalId co "xt-"') == {"a", "b"}
    assert await org.find('externalId sw "E"') == {"a"}
    assert await org.find('externalId lt "a"') == {"a"}  # "E" < "a" < "e"
    assert await org.find(f'id eq "{a}"') == {"a"}
    assert await org.find(f'id eq "{str(a).upper()}"') == {"a"}  # ids compare as UUIDs
    assert await org.find(f'id ne "{a}"') == {"b", "c"}
    assert await org.find('id eq "not-a-uuid"') == set()
    assert await org.find('id ne "not-a-uuid"') == {"a", "b", "c"}
    assert await org.find(f'id sw "{str(a)[:8]}"') == {"a"}


async def test_like_wildcards_are_literal(org: Org) -> None:
    await org.user("100%_done\\")
    await org.user("100x_done")
    await org.user("100xydone")
    assert await org.find('userName co "%"') == {"100%_done\\"}
    assert await org.find('userName sw "100%"') == {"100%_done\\"}
    assert await org.find('userName co "_d"') == {"100%_done\\", "100x_done"}
    assert await org.find('userName ew "\\\\"') == {"100%_done\\"}
    assert await org.find('userName co ""') == {"100%_done\\", "100x_done", "100xydone"}


async def test_injection_attempts_match_nothing_and_raise_nothing(org: Org) -> None:
    await org.user("alice", title="x")
    for value in (
        "x' OR 1=1 --",
        "x\\' OR '1'='1",
        "'; DROP TABLE users; --",
        "$1",
        "') OR TRUE --",
        "\\u0027",
    ):
        quoted = json.dumps(value)
        for op in ("eq", "co", "sw", "gt"):
            assert await org.find(f"userName {op} {quoted}") <= {"alice"}
        assert await org.find(f"userName eq {quoted}") == set()
        assert await org.find(f"title co {quoted}") == set()
        assert await org.find(f"emails[type eq {quoted}]") == set()
    assert await org.find('userName eq "alice"') == {"alice"}  # the table is still there


async def test_booleans(org: Org) -> None:
    await org.user("on", active=True, emails=[{"value": "on@x.org", "primary": True}])
    await org.user("off", active=False, emails=[{"value": "off@x.org", "primary": False}])
    await org.user("none", emails=[{"value": "none@x.org"}])
    assert await org.find("active eq true") == {"on", "none"}
    assert await org.find("active eq false") == {"off"}
    assert await org.find("active ne true") == {"off"}
    assert await org.find("emails.primary eq true") == {"on"}
    assert await org.find("emails.primary eq false") == {"off"}
    assert await org.find("emails.primary ne true") == {"off", "none"}
    assert await org.find("emails[primary eq true]") == {"on"}
    assert await org.find("emails[not (primary eq true)]") == {"off", "none"}
    assert await org.find("emails.primary pr") == {"on", "off"}


# ---- attributes: sub-attributes, value paths, URNs, meta, groups and members


async def test_sub_attributes(org: Org) -> None:
    await org.user("a", name={"familyName": "Jensen", "givenName": "Barbara"})
    await org.user("b", name={"familyName": "Smith"})
    await org.user("c")
    assert await org.find('name.familyName eq "JENSEN"') == {"a"}
    assert await org.find("name.givenName pr") == {"a"}
    assert await org.find('name.givenName ne "barbara"') == {"b", "c"}
    assert await org.find('NAME.FAMILYNAME sw "s"') == {"b"}
    assert await org.find('name.familyName gt "K"') == {"b"}


async def test_multi_valued_attributes_and_value_paths(org: Org) -> None:
    await org.user(
        "a",
        emails=[
            {"type": "work", "value": "A@Example.com", "primary": True},
            {"type": "home", "value": "a@home.org"},
        ],
    )
    await org.user("b", emails=[{"type": "home", "value": "b@example.com"}])
    await org.user("c", emails=[{"type": "work", "value": "c@other.org"}])
    await org.user("d")
    assert await org.find('emails.value eq "a@example.COM"') == {"a"}
    assert await org.find('emails[value eq "B@EXAMPLE.COM"]') == {"b"}
    assert await org.find('emails co "example.com"') == {"a", "b"}  # means emails.value
    assert await org.find('emails.value ew ".org"') == {"a", "c"}
    assert await org.find('emails.type eq "work"') == {"a", "c"}
    # some value matches; ne: no value equals
    assert await org.find('emails.type ne "work"') == {"b", "d"}
    assert await org.find('emails.value ne "a@home.org"') == {"b", "c", "d"}
    assert await org.find('emails[type eq "work" and value co "example"]') == {"a"}
    # the two conditions hold on one element, not on two different ones
    assert await org.find('emails[type eq "home" and value co "example.com"]') == {"b"}
    assert await org.find('emails.type eq "home" and emails.value co "a@example"') == {"a"}
    # Microsoft Entra's form
    assert await org.find('emails[type eq "work"].value eq "a@example.com"') == {"a"}
    assert await org.find('emails[type eq "home"].value eq "a@example.com"') == set()
    assert await org.find('emails[type eq "work"].value pr') == {"a", "c"}
    assert await org.find('emails[type eq "work" or type eq "home"]') == {"a", "b", "c"}
    assert await org.find('not (emails[type eq "work"])') == {"b", "d"}
    assert await org.find('emails[not (type eq "work")]') == {"a", "b"}
    assert await org.find('emails.value gt "b"') == {"b", "c"}


async def test_non_array_document_values_are_no_values(org: Org) -> None:
    await org.user("odd", emails={"value": "x@x.org"})  # not what the writer stores
    assert await org.find('emails[type eq "work"]') == set()
    assert await org.find('emails.type ne "work"') == {"odd"}


async def test_urn_qualified_attributes(org: Org) -> None:
    await org.user(
        "a",
        **{ENTERPRISE_URN: {"department": "Sales", "manager": {"value": "M-1"}}},
    )
    await org.user("b", **{ENTERPRISE_URN: {"department": "R&D"}})
    await org.user("c")
    assert await org.find(f'{ENTERPRISE_URN}:department eq "sales"') == {"a"}
    assert await org.find(f'{ENTERPRISE_URN.upper()}:DEPARTMENT eq "r&d"') == {"b"}
    assert await org.find(f"{ENTERPRISE_URN}:department pr") == {"a", "b"}
    assert await org.find(f'{ENTERPRISE_URN}:department ne "sales"') == {"b", "c"}
    assert await org.find(f'{ENTERPRISE_URN}:manager.value eq "M-1"') == {"a"}
    assert await org.find(f'{ENTERPRISE_URN}:manager.value eq "m-1"') == set()  # caseExact
    assert await org.find(f"{ENTERPRISE_URN}:manager pr") == {"a"}
    assert await org.find(f"{ENTERPRISE_URN} pr") == {"a", "b"}
    core = "urn:ietf:params:scim:schemas:core:2.0:User"
    assert await org.find(f'{core}:userName eq "A"') == {"a"}
    assert await org.find(f'{core}:emails[type eq "work"]') == set()


async def test_meta_dates(org: Org) -> None:
    await org.user("old", created=T0, modified=T0 + timedelta(days=30))
    await org.user("new", created=T0 + timedelta(days=10), modified=T0 + timedelta(days=10))
    assert await org.find('meta.created gt "2024-01-05T00:00:00Z"') == {"new"}
    assert await org.find('meta.created le "2024-01-01T00:00:00Z"') == {"old"}
    assert await org.find('meta.created eq "2024-01-01T01:00:00+01:00"') == {"old"}
    assert await org.find('meta.created ne "2024-01-01T00:00:00Z"') == {"new"}
    assert await org.find('meta.lastModified ge "2024-01-20T00:00:00.000Z"') == {"old"}
    assert await org.find('meta.lastModified lt "2024-01-20"') == {"new"}  # no zone: UTC
    # .NET's seven fractional digits (Microsoft Entra)
    assert await org.find('meta.created eq "2024-01-01T00:00:00.0000000Z"') == {"old"}
    assert await org.find("meta.created pr and meta pr") == {"old", "new"}
    assert await org.find('meta.resourceType eq "User"') == {"old", "new"}
    assert await org.find('meta.resourceType eq "user"') == set()  # caseExact
    assert await org.find('meta.version eq "W/\\"1\\""') == {"old", "new"}


async def test_logical_precedence(org: Org) -> None:
    await org.user("a", title="t", nickName="n")
    await org.user("b", title="t")
    await org.user("c", nickName="n")
    await org.user("d")
    # and binds tighter than or
    assert await org.find('userName eq "a" or userName eq "b" and nickName pr') == {"a"}
    assert await org.find('(userName eq "a" or userName eq "c") and title pr') == {"a"}
    assert await org.find('userName eq "d" or title pr and nickName pr') == {"a", "d"}
    assert await org.find("not (title pr) and nickName pr") == {"c"}
    assert await org.find("not (title pr and nickName pr)") == {"b", "c", "d"}
    assert await org.find("not (not (title pr))") == {"a", "b"}
    # NULL from an absent value never flips under not
    assert await org.find('not (nickName eq "n")') == {"b", "d"}
    assert await org.find('not (title eq "t" and nickName eq "n")') == {"b", "c", "d"}
    assert await org.find('not (externalId eq "x")') == {"a", "b", "c", "d"}
    assert await org.find('title pr OR nickName pr AND userName eq "c"') == {"a", "b", "c"}


async def test_presence(org: Org) -> None:
    await org.user("full", title="t", name={"givenName": "G"}, emails=[{"value": "f@x.org"}])
    await org.user("empty", title="", name={"givenName": ""}, emails=[])
    await org.user("nulls", title=None, name={}, emails=[{}], displayName="")
    await org.user("bare", display_name="Bare")
    assert await org.find("title pr") == {"full"}
    assert await org.find("name pr") == {"full"}
    assert await org.find("emails pr") == {"full"}
    assert await org.find("emails.value pr") == {"full"}
    assert await org.find("displayName pr") == {"bare"}
    assert await org.find("not (title pr)") == {"empty", "nulls", "bare"}
    assert await org.find("userName pr and id pr and active pr") == {
        "full",
        "empty",
        "nulls",
        "bare",
    }
    assert await org.find("groups pr") == set()


async def test_groups_of_users(org: Org) -> None:
    a = await org.user("a", display_name="Alice")
    b = await org.user("b")
    c = await org.user("c")
    admins = await org.group("Admins", [a, b])
    await org.group("Staff", [b])
    assert await org.find(f'groups.value eq "{admins}"') == {"a", "b"}
    assert await org.find(f'groups eq "{admins}"') == {"a", "b"}
    assert await org.find(f'groups[value eq "{admins}"]') == {"a", "b"}
    assert await org.find(f'groups.value ne "{admins}"') == {"c"}
    assert await org.find('groups.value eq "not-a-uuid"') == set()
    assert await org.find('groups.display eq "staff"') == {"b"}
    assert await org.find('groups[display sw "ADM" and type eq "direct"]') == {"a", "b"}
    assert await org.find("groups pr") == {"a", "b"}
    assert await org.find("not (groups pr)") == {"c"}
    assert c in org.names

    assert await org.find('displayName eq "admins"', GROUPS) == {"Admins"}
    assert await org.find(f'members[value eq "{a}"]', GROUPS) == {"Admins"}
    assert await org.find(f'members.value eq "{b}"', GROUPS) == {"Admins", "Staff"}
    assert await org.find(f'members eq "{str(b).upper()}"', GROUPS) == {"Admins", "Staff"}
    assert await org.find(f'members.value eq "{c}"', GROUPS) == set()
    assert await org.find('members.value eq "nope"', GROUPS) == set()
    assert await org.find('members[value eq "x\' OR 1=1"]', GROUPS) == set()
    assert await org.find(f'members.value ne "{a}"', GROUPS) == {"Staff"}
    # display is the member's displayName, else its userName
    assert await org.find('members.display eq "alice"', GROUPS) == {"Admins"}
    assert await org.find('members[display eq "B"]', GROUPS) == {"Admins", "Staff"}
    assert await org.find('members[type eq "User"]', GROUPS) == {"Admins", "Staff"}
    assert await org.find("members pr", GROUPS) == {"Admins", "Staff"}
    assert await org.find('displayName sw "a" or members pr', GROUPS) == {"Admins", "Staff"}
    assert await org.find("meta.created pr", GROUPS) == {"Admins", "Staff"}


async def test_organisations_do_not_see_each_other(org: Org, pool: asyncpg.Pool) -> None:
    other = await new_org(pool, "globex")
    await org.user("same")
    await other.user("same")
    assert await org.find('userName eq "same"') == {"same"}
    params = Params(org.org_id)
    where = compile_filter(USERS, 'userName eq "same"', params)
    count = await pool.fetchval(
        f"SELECT count(*) FROM users r WHERE r.org_id = $1 AND ({where})", *params.values
    )
    assert count == 1


# ---- errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('foo eq "x"', 'unknown attribute "foo" in filter'),
        ('department eq "x"', f'did you mean "{ENTERPRISE_URN}:department"'),
        ('urn:example:params:Thing:foo eq "x"', 'unknown schema "urn:example:params:Thing"'),
        ('name.nickname eq "x"', 'unknown sub-attribute "nickname" of "name"'),
        ('userName.first eq "x"', '"userName" has no sub-attributes'),
        ('emails[kind eq "work"]', 'unknown sub-attribute "kind" of "emails"'),
        ('emails[value.x eq "work"]', 'unknown sub-attribute "value.x" of "emails"'),
        ('name[givenName eq "x"]', '"name" is not multi-valued'),
        ('emails.value[type eq "x"]', "invalid filter"),
        ('userName eq "x" and', "invalid filter: invalid syntax at column"),
        ('userName xx "x"', "invalid filter"),
        ('(userName eq "x"', "invalid filter"),
        ('userName eq "x', "invalid filter"),
        ("", "invalid filter"),
        ("active gt true", 'operator "gt" cannot be used on the boolean attribute "active"'),
        ('active co "t"', 'operator "co" cannot be used on the boolean attribute "active"'),
        ("emails.primary le false", 'operator "le" cannot be used on the boolean attribute'),
        ('active eq "yes"', '"active" is a boolean: compare it with true or false, not "yes"'),
        ("active eq 1", '"active" is a boolean'),
        ("meta.created gt 5", '"meta.created" is a dateTime'),
        ('meta.created gt "yesterday"', 'invalid dateTime "yesterday" for "meta.created"'),
        ('meta.created gt "2024-13-01T00:00:00Z"', "invalid dateTime"),
        ('meta.created gt "0001-01-01T00:00:00+01:00"', "invalid dateTime"),
        ('meta.lastModified co "2024"', 'operator "co" cannot be used on the dateTime'),
        ("userName eq 5", '"userName" is a string: compare it with a quoted string, not 5'),
        ("userName eq true", "not true"),
        ("userName eq null", 'cannot compare "userName" with null: use "userName pr"'),
        ("emails.value eq null", 'cannot compare "emails.value" with null'),
        ("emails[value eq 3]", '"emails.value" is a string'),
        ('name eq "x"', '"name" is complex: compare one of its sub-attributes'),
        ('meta eq "x"', '"meta" is complex'),
        ('addresses co "x"', '"addresses" has no "value"'),
        ('password eq "secret"', '"password" cannot be used in a filter'),
        ('meta.location eq "x"', '"meta.location" cannot be used in a filter'),
        ('groups.$ref eq "x"', '"groups.$ref" cannot be used in a filter'),
        ('x509Certificates.value gt "x"', 'operator "gt" cannot be used on the binary'),
        ('userName eq "a\\u0000b"', "contains a NUL character"),
        ('userName co "\\ud800"', "not valid Unicode"),
        ("userName gt 1e400", "number out of range"),
        ('userName eq "' + "x" * 4100 + '"', "filter is too long"),
    ],
)
def test_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        compile_filter(USERS, text, Params("org"))
    assert message in caught.value.message
    assert caught.value.field == "filter"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('userName eq "x"', 'unknown attribute "userName"'),
        ('members[foo eq "x"]', 'unknown sub-attribute "foo" of "members"'),
        ('members.$ref eq "x"', '"members.$ref" cannot be used'),
        (f'{ENTERPRISE_URN}:department eq "x"', f'unknown schema "{ENTERPRISE_URN}"'),
        ('urn:ietf:params:scim:schemas:core:2.0:User:displayName eq "x"', "unknown schema"),
    ],
)
def test_group_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        compile_filter(GROUPS, text, Params("org"))
    assert message in caught.value.message


async def test_odd_but_valid_values_are_no_sql_errors(org: Org) -> None:
    """Whatever a valid filter carries, PostgreSQL sees well-typed parameters."""
    await org.user("a", emails=[{"value": "a@x.org"}])
    for text in (
        'userName eq "\\u00e9\\ud83d\\ude00"',
        'emails.value gt "\\u00ff"',
        'meta.created gt "9999-12-31T23:59:59Z"',
        'meta.created lt "0001-01-01T00:00:00Z"',
        'meta.created gt "2024-01-01T00:00:00.123456+05:30"',
        'id gt "zzz"',
        'id co "-"',
        "emails.primary ne false",
        'groups.value ge "0"',
        'groups.type eq "direct"',
        'emails[value eq "a@x.org" and value eq "b@x.org"]',
        'emails[value eq "a@x.org" or type pr]',
    ):
        await org.find(text)
    assert await org.find('emails[value eq "A@X.ORG" and not (type pr)]') == {"a"}


# ---- sortBy


async def test_sort_expressions(org: Org) -> None:
    await org.user(
        "b",
        name={"familyName": "zed"},
        emails=[{"value": "z@x.org"}, {"value": "a@x.org", "primary": True}],
        created=T0 + timedelta(days=2),
        **{ENTERPRISE_URN: {"department": "Ops"}},
    )
    await org.user(
        "A",
        name={"familyName": "Young"},
        emails=[{"value": "m@x.org"}, {"value": "b@x.org"}],
        created=T0 + timedelta(days=1),
        active=False,
    )
    await org.user("C", created=T0 + timedelta(days=3), **{ENTERPRISE_URN: {"department": "eng"}})
    assert await org.sorted("userName") == ["A", "b", "C"]
    assert await org.sorted("USERNAME", descending=True) == ["C", "b", "A"]
    assert await org.sorted("name.familyName") == ["A", "b", "C"]
    assert await org.sorted("meta.created") == ["A", "b", "C"]
    assert await org.sorted("meta.lastModified", descending=True) == ["C", "b", "A"]
    # the primary email, else the first
    assert await org.sorted("emails") == ["b", "A", "C"]
    assert await org.sorted("emails.value") == ["b", "A", "C"]
    assert await org.sorted(f"{ENTERPRISE_URN}:department") == ["C", "b", "A"]
    assert await org.sorted("active") == ["A", "b", "C"]
    assert await org.sorted("id") == sorted(org.names.values(), key=lambda n: _id(org, n))
    for key in ("externalId", "displayName", "title", "emails.type", "meta.resourceType"):
        assert len(await org.sorted(key)) == 3
    assert sort_expression(USERS, "userName") == "lower(r.user_name)"
    assert sort_expression(USERS, "externalId") == "r.external_id"
    assert sort_expression(GROUPS, "displayName") == "lower(r.display_name)"


def _id(org: Org, name: str) -> uuid.UUID:
    return next(i for i, n in org.names.items() if n == name)


@pytest.mark.parametrize(
    ("sort_by", "message"),
    [
        ("foo", 'unknown attribute "foo" in sortBy'),
        ("name", 'cannot sort by "name"'),
        ("groups", 'cannot sort by "groups" (it is computed from memberships)'),
        ("addresses", 'cannot sort by "addresses"'),
        ("password", '"password" cannot be used in a sortBy'),
        ("name.foo", 'unknown sub-attribute "foo" of "name"'),
        ("urn:example:Thing:foo", 'unknown schema "urn:example:Thing"'),
        ("userName desc", 'invalid sortBy "userName desc"'),
        ("", "invalid sortBy"),
    ],
)
def test_sort_errors(sort_by: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        sort_expression(USERS, sort_by)
    assert not isinstance(caught.value, InvalidFilter)
    assert message in caught.value.message
    assert caught.value.field == "sortBy"


# ---- the hot paths are answered from their indexes


async def test_hot_paths_use_their_indexes(org: Org, pool: asyncpg.Pool) -> None:
    other = await new_org(pool, "globex")
    for target in (org, other):
        await pool.execute(
            """
            INSERT INTO users (org_id, user_id, user_name, external_id, attributes)
            SELECT $1, gen_random_uuid(), 'user' || i, 'ext' || i,
                   jsonb_build_object('emails', jsonb_build_array(
                       jsonb_build_object('value', 'user' || i || '@x.org')))
            FROM generate_series(1, 3000) AS i
            """,
            target.org_id,
        )
        await pool.execute(
            """
            INSERT INTO user_emails (org_id, user_id, value_lower)
            SELECT org_id, user_id, lower(attributes->'emails'->0->>'value')
            FROM users WHERE org_id = $1
            """,
            target.org_id,
        )
    await pool.execute("ANALYZE")
    cases = {
        'userName eq "User42"': "users_org_user_name_key",
        'externalId eq "ext42"': "users_org_external_id_idx",
        'emails.value eq "USER42@x.org"': "user_emails_value_idx",
        'emails[value eq "user42@x.org"]': "user_emails_value_idx",
        'emails[type eq "work"].value eq "user42@x.org"': "user_emails_value_idx",
    }
    async with pool.acquire() as conn:
        for text, index in cases.items():
            params = Params(org.org_id)
            sql = (
                "SELECT user_id FROM users r"
                f" WHERE r.org_id = $1 AND ({compile_filter(USERS, text, params)})"
            )
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *params.values))
            assert index in plan, f"{text}:\n{plan}"
            assert "Seq Scan on users" not in plan, f"{text}:\n{plan}"
            found = await conn.fetch(sql, *params.values)
            assert len(found) == (0 if "work" in text else 1), text
