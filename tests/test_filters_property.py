"""Property: a filter compiled to SQL selects exactly the users that scim2-models'
in-memory evaluator (ScimFilter.match) says it matches.

Each example inserts a fresh organisation of ~30 generated users into one shared
database, then draws filters over the values those users hold (so that they do
match some of them): every operator, and/or/not with and without parentheses,
value paths (Entra's `emails[type eq "work"].value eq "x"` too), pr, and
attribute names, URNs and operators in any case.

Where the evaluator and the compiler knowingly differ, the generator stays out of
the way (the compiler's choice is the RFC's or the stricter one; see core.filters):

- strings are ASCII: Python's str.lower() and PostgreSQL's lower() (which follows
  the database's LC_CTYPE) disagree on some non-ASCII letters, e.g. "İ";
- `null` operands, comparisons on a complex attribute as a whole, and booleans
  compared with strings ("yes") are errors in the compiler, matches in the evaluator;
- ids are compared as UUIDs by the compiler (any case), caseExact by the
  evaluator: ids in filters are spelt in lower case, as the service returns them.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from scim2_models import EnterpriseUser, ScimFilter, User

from common.wire import USER_URN
from core.filters import Params, compile_filter
from core.schema import ENTERPRISE_URN, user_schema

Model = User[EnterpriseUser]

# Values come from small vocabularies (one draw each, so ~30 users stay cheap to
# generate): case variants, quotes, backslashes, LIKE wildcards and blanks.
WORDS = [
    "", "a", "A", "ab", "aB", "Ab", "abz", "ABZ", "b", "B_", "b_a", "ba%", "%", "_",
    "z z", "Zed", "zed", "O'Brien", "o'brien", "back\\slash", "0", "a0", "\"q\"",
]  # fmt: skip
EMAIL_LOCALS = ["a", "A", "ab", "Ab", "b_", "b%z", "Zed", "zed", "a0", "o'b"]
DOMAINS = ["x.org", "ex.io", "y.example.com"]
T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
STAMPS = [T0 + timedelta(hours=h, microseconds=us) for h in range(4) for us in (0, 500)]
OFFSETS = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]

STRING_OPS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"]
SUBSTRING_OPS = {"co", "sw", "ew"}
ORDER_OPS = ["eq", "ne", "gt", "ge", "lt", "le"]

_slugs = itertools.count()


@dataclass
class Person:
    user_id: uuid.UUID
    user_name: str
    display_name: str | None
    external_id: str | None
    active: bool
    created: datetime
    modified: datetime
    document: dict[str, Any]  # as stored

    def resource(self) -> Any:
        """The SCIM resource the evaluator sees."""
        schemas = [USER_URN] + ([ENTERPRISE_URN] if ENTERPRISE_URN in self.document else [])
        body = {
            **self.document,
            "schemas": schemas,
            "id": str(self.user_id),
            "meta": {
                "resourceType": "User",
                "created": self.created.isoformat(),
                "lastModified": self.modified.isoformat(),
            },
        }
        return Model.model_validate(body)


word = st.sampled_from(WORDS)
maybe_word = st.one_of(st.none(), word)
email = st.builds(
    lambda local, domain, kind, primary: {
        "value": f"{local}@{domain}",
        **({"type": kind} if kind else {}),
        **({"primary": primary} if primary is not None else {}),
    },
    st.sampled_from(EMAIL_LOCALS),
    st.sampled_from(DOMAINS),
    st.sampled_from([None, "work", "home", "other"]),
    st.sampled_from([None, True, False]),
)


@st.composite
def people(draw: st.DrawFn, index: int) -> Person:
    user_name = f"{draw(word)}{index}"  # unique without retries
    display_name, external_id, title = draw(maybe_word), draw(maybe_word), draw(maybe_word)
    document: dict[str, Any] = {"userName": user_name}
    for key, value in (("displayName", display_name), ("externalId", external_id)):
        if value is not None:
            document[key] = value
    if title is not None:
        document["title"] = title
    given, family = draw(maybe_word), draw(maybe_word)
    if given is not None or family is not None or draw(st.booleans()):
        document["name"] = {
            k: v for k, v in (("givenName", given), ("familyName", family)) if v is not None
        }
    if draw(st.integers(0, 4)):
        document["emails"] = draw(st.lists(email, max_size=3))
    department = draw(maybe_word)
    if department is not None or draw(st.booleans()):
        document[ENTERPRISE_URN] = {} if department is None else {"department": department}
    active = draw(st.booleans())
    document["active"] = active
    created = draw(st.sampled_from(STAMPS))
    modified = created + draw(st.sampled_from([timedelta(0), timedelta(minutes=90)]))
    return Person(
        uuid.uuid4(), user_name, display_name, external_id, active, created, modified, document
    )


@st.composite
def crowds(draw: st.DrawFn) -> list[Person]:
    size = draw(st.integers(20, 30))
    return [draw(people(i)) for i in range(size)]


# ---- filters over the values the people hold
#
# A filter strategy is built once; what it draws is a function of the values the
# people hold (Pool), rendered to the filter's text in the test.

Pool = dict[str, list[str]]
Render = Callable[[Pool], str]


def values_of(people: list[Person]) -> Pool:
    def collect(get: Callable[[dict[str, Any]], Any]) -> list[str]:
        found = (get(p.document) for p in people)
        return sorted({v for v in found if isinstance(v, str)})

    mails = [e for p in people for e in p.document.get("emails") or []]
    return {
        "userName": collect(lambda d: d.get("userName")),
        "displayName": collect(lambda d: d.get("displayName")),
        "externalId": collect(lambda d: d.get("externalId")),
        "title": collect(lambda d: d.get("title")),
        "name.givenName": collect(lambda d: (d.get("name") or {}).get("givenName")),
        "name.familyName": collect(lambda d: (d.get("name") or {}).get("familyName")),
        f"{ENTERPRISE_URN}:department": collect(
            lambda d: (d.get(ENTERPRISE_URN) or {}).get("department")
        ),
        "id": [str(p.user_id) for p in people],
        "emails.value": sorted({e["value"] for e in mails}),
        "emails.type": ["work", "home", "other"],
    }


def recased(text: str, mask: int) -> str:
    return "".join(c.swapcase() if mask >> (i % 16) & 1 else c for i, c in enumerate(text))


def quoted(value: str) -> str:
    return json.dumps(value)


@dataclass(frozen=True)
class Operand:
    """A string operand: a value some user holds (maybe cut, maybe recased), or a word."""

    key: str
    held: bool
    index: int
    cut: tuple[int, int] | None
    mask: int
    word: str
    email: bool = False  # the evaluator checks a whole address against EmailStr

    def __call__(self, pool: Pool) -> str:
        values = pool[self.key]
        if not (self.held and values):
            if self.email and self.cut is None:  # a whole address, valid for EmailStr
                local = EMAIL_LOCALS[self.index % len(EMAIL_LOCALS)]
                return recased(f"{local}@{DOMAINS[self.index % len(DOMAINS)]}", self.mask)
            return recased(self.word, self.mask)
        value = values[self.index % len(values)]
        if self.cut is not None:
            start = self.cut[0] % (len(value) + 1)
            value = value[start : start + self.cut[1]]
        return recased(value, self.mask)


def operands(key: str, op: str, *, email: bool = False) -> st.SearchStrategy[Operand]:
    cut = st.tuples(st.integers(0, 40), st.integers(0, 40))
    if op not in SUBSTRING_OPS:
        cut = st.one_of(st.none(), cut) if not email else st.none()
    return st.builds(
        Operand,
        st.just(key),
        st.integers(0, 3).map(bool),
        st.integers(0, 1000),
        cut,
        st.integers(0, 2**16 - 1),
        word,
        st.just(email),
    )


STRING_ATTRS = [
    "userName",
    "displayName",
    "externalId",
    "title",
    "name.givenName",
    "name.familyName",
    f"{ENTERPRISE_URN}:department",
]
PRESENT_ATTRS = [
    *STRING_ATTRS,
    "id",
    "active",
    "name",
    "emails",
    "emails.value",
    "emails.type",
    "emails.primary",
    "meta",
    "meta.created",
]
masks = st.integers(0, 2**16 - 1)


@st.composite
def attr_names(draw: st.DrawFn, name: str) -> str:
    spelt = recased(name, draw(masks))
    if draw(st.integers(0, 5)) == 0 and not name.startswith("urn:"):
        spelt = f"{USER_URN}:{spelt}"
    return spelt


@st.composite
def comparisons(draw: st.DrawFn) -> Render:
    kind = draw(st.sampled_from(["string", "email", "id", "bool", "stamp", "type"]))
    if kind == "bool":
        name = draw(st.sampled_from(["active", "emails.primary"]))
        text = f"{draw(attr_names(name))} {draw(st.sampled_from(['eq', 'NE']))} "
        text += draw(st.sampled_from(["true", "false", "True", "FALSE"]))
        return lambda pool: text
    if kind == "stamp":
        name = draw(st.sampled_from(["meta.created", "meta.lastModified"]))
        stamp = draw(st.sampled_from(STAMPS)) + timedelta(microseconds=draw(st.integers(-1, 1)))
        value = stamp.astimezone(draw(st.sampled_from(OFFSETS))).isoformat()
        text = f"{draw(attr_names(name))} {draw(st.sampled_from(ORDER_OPS))} "
        text += quoted(value.replace("+00:00", "Z"))
        return lambda pool: text
    if kind == "id":
        op = draw(st.sampled_from(["eq", "ne", "sw", "co", "gt", "le"]))
        operand = draw(operands("id", op))
        head = f"{draw(attr_names('id'))} {op}"
        return lambda pool: f"{head} {quoted(operand(pool).lower())}"
    op = draw(st.sampled_from(STRING_OPS))
    if kind == "string":
        name = draw(st.sampled_from(STRING_ATTRS))
        operand = draw(operands(name, op))
    elif kind == "email":
        name = draw(st.sampled_from(["emails.value", "emails"]))
        operand = draw(operands("emails.value", op, email=True))
    else:
        name = "emails.type"
        operand = draw(operands(name, op))
    head = f"{draw(attr_names(name))} {recased(op, draw(masks))}"
    return lambda pool: f"{head} {quoted(operand(pool))}"


@st.composite
def presences(draw: st.DrawFn) -> Render:
    text = f"{draw(attr_names(draw(st.sampled_from(PRESENT_ATTRS))))} {recased('pr', draw(masks))}"
    return lambda pool: text


@st.composite
def email_terms(draw: st.DrawFn) -> Render:
    """A comparison inside emails[...]."""
    sub = draw(st.sampled_from(["value", "type", "primary", "pr"]))
    if sub == "pr":
        text = f"{recased(draw(st.sampled_from(['value', 'type', 'primary'])), draw(masks))} pr"
        return lambda pool: text
    if sub == "primary":
        text = f"primary {draw(st.sampled_from(['eq', 'ne']))} "
        text += draw(st.sampled_from(["true", "false"]))
        return lambda pool: text
    op = draw(st.sampled_from(STRING_OPS))
    operand = draw(operands(f"emails.{sub}", op, email=sub == "value"))
    head = f"{recased(sub, draw(masks))} {op}"
    return lambda pool: f"{head} {quoted(operand(pool))}"


def combined(terms: st.SearchStrategy[Render], max_leaves: int) -> st.SearchStrategy[Render]:
    def join(left: Render, op: str, right: Render, parenthesised: bool) -> Render:
        if parenthesised:
            return lambda pool: f"({left(pool)}) {op} ({right(pool)})"
        return lambda pool: f"{left(pool)} {op} {right(pool)}"

    def negate(inner: Render) -> Render:
        return lambda pool: f"not ({inner(pool)})"

    def extend(inner: st.SearchStrategy[Render]) -> st.SearchStrategy[Render]:
        ops = st.sampled_from(["and", "or", "AND", "Or"])
        return st.one_of(st.builds(join, inner, ops, inner, st.booleans()), inner.map(negate))

    return st.recursive(terms, extend, max_leaves=max_leaves)


@st.composite
def value_paths(draw: st.DrawFn) -> Render:
    inner = draw(email_filters)
    head = recased("emails", draw(masks))
    if draw(st.integers(0, 3)):
        return lambda pool: f"{head}[{inner(pool)}]"
    # Microsoft Entra's form: emails[type eq "work"].value eq "x"
    op = draw(st.sampled_from(STRING_OPS))
    operand = draw(operands("emails.value", op, email=True))
    return lambda pool: f"{head}[{inner(pool)}].value {op} {quoted(operand(pool))}"


email_filters = combined(email_terms(), 3)
FILTERS = combined(st.one_of(comparisons(), presences(), value_paths()), 4)


# ---- the property


async def insert(pool: asyncpg.Pool, people: list[Person]) -> uuid.UUID:
    org_id = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO organizations (org_id, slug, display_name) VALUES ($1, $2, 'p')",
            org_id,
            f"prop-{next(_slugs)}-{org_id.hex[:8]}",
        )
        await conn.executemany(
            """
            INSERT INTO users (org_id, user_id, user_name, external_id, display_name, active,
                               attributes, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            [
                (
                    org_id,
                    p.user_id,
                    p.user_name,
                    p.external_id,
                    p.display_name,
                    p.active,
                    p.document,
                    p.created,
                    p.modified,
                )
                for p in people
            ],
        )
        # as the writer keeps it: one row per address, lower-cased
        await conn.executemany(
            "INSERT INTO user_emails (org_id, user_id, value_lower) VALUES ($1, $2, $3)",
            {
                (org_id, p.user_id, e["value"].lower())
                for p in people
                for e in p.document.get("emails") or []
            },
        )
    return org_id


async def selected(pool: asyncpg.Pool, org_id: uuid.UUID, text: str) -> tuple[set[uuid.UUID], str]:
    params = Params(org_id)
    where = compile_filter(user_schema(), text, params)
    rows = await pool.fetch(
        f"SELECT user_id FROM users r WHERE r.org_id = $1 AND ({where})", *params.values
    )
    return {row["user_id"] for row in rows}, where


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one database for all examples, an org each
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
async def test_sql_agrees_with_the_in_memory_evaluator(
    pool: asyncpg.Pool, data: st.DataObject
) -> None:
    people = data.draw(crowds(), label="people")
    resources = {p.user_id: p.resource() for p in people}
    org_id = await insert(pool, people)
    pool_of_values = values_of(people)
    for _ in range(data.draw(st.integers(1, 4), label="filters")):
        text = data.draw(FILTERS, label="filter")(pool_of_values)
        note(f"filter: {text}")
        oracle = ScimFilter[Model](text)
        expected = {i for i, resource in resources.items() if oracle.match(resource)}
        found, sql = await selected(pool, org_id, text)
        if found != expected:
            wrong = [p.document for p in people if (p.user_id in found) != (p.user_id in expected)]
            raise AssertionError(
                f"filter {text!r}\nSQL: {sql}\n"
                f"SQL only: {len(found - expected)}, evaluator only: {len(expected - found)}\n"
                f"users they disagree on: {json.dumps(wrong, indent=1, default=str)}"
            )
