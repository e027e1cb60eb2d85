"""SCIM filters (RFC 7644 §3.4.2.2) and sortBy compiled to parameterised SQL.

The SQL is a boolean expression over one row aliased `r` of the resource's table
(users or groups). Values only ever travel as $n parameters (see Params); the only
names spliced into the SQL text are canonical attribute names from core.schema.

scim2-models parses the filter; one FilterVisitor turns the tree into SQL. The
semantics are those of scim2-models' in-memory evaluator (ScimFilter.match), which
the property tests hold this module to:

- attribute names, schema URNs and operators match without regard to case; string
  values too, unless the attribute is caseExact (then lower() on both sides);
  ordering operators on strings compare code points (COLLATE "C");
- a comparison on an absent attribute does not hold, except `ne`;
- on a multi-valued attribute a comparison holds when some value matches, and `ne`
  when no value equals the operand; without a sub-attribute it compares `value`
  (`emails co "x"` is `emails.value co "x"`);
- `pr`: not null, not "", and for complex or multi-valued attributes some
  sub-attribute is present (an empty array or object is absent);
- `not` negates: a NULL from SQL's three-valued logic counts as false
  (`not (x)` is compiled as `(x) IS NOT TRUE`).

Anything the filter gets wrong (syntax, an unknown attribute, sub-attribute or
schema, an operator or value the attribute's type does not take) raises
core.errors.InvalidFilter naming it, so a bad filter never reaches the database.
Deliberate departures from the evaluator: `null` operands, and comparing a complex
attribute as a whole, are errors instead of matching (nearly) nothing; a boolean
only compares with true/false (the evaluator reads "yes" as true); ids compare
as UUIDs, so any spelling of the hex digits matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from scim2_models import InvalidFilterException, ScimFilter
from scim2_models.path import (
    AttrPath,
    CompareOperator,
    Comparison,
    FilterVisitor,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
)

from common.wire import USER_URN
from core.errors import InvalidArgument, InvalidFilter
from core.schema import Attr, ResourceSchema

MAX_FILTER_LENGTH = 4096

# `emails.value eq` for users, answered from user_emails_value_idx; the writer
# keeps one row per email with value_lower = lower(value)
USER_EMAIL_IS = (
    "r.user_id IN (SELECT e.user_id FROM user_emails e"
    " WHERE e.org_id = r.org_id AND e.value_lower = lower({value}))"
)

# the elements of a multi-valued attribute kept in the document; anything but an
# array counts as no elements
_ARRAY = "CASE jsonb_typeof({array}) WHEN 'array' THEN {array} ELSE '[]' END"

SOME_ELEMENT = (
    "EXISTS (SELECT 1 FROM jsonb_array_elements(" + _ARRAY + ") AS elem(v) WHERE {where})"
)

# the primary element, else the first (RFC 7644 §3.4.2.3)
PRIMARY_ELEMENT = (
    "(SELECT {key} FROM jsonb_array_elements(" + _ARRAY + ") WITH ORDINALITY AS elem(v, n)"
    " ORDER BY elem.v->'primary' = 'true' DESC NULLS LAST, elem.n LIMIT 1)"
)

# a User's groups and a Group's members, computed from group_members
SOME_GROUP = (
    "EXISTS (SELECT 1 FROM group_members m{join}"
    " WHERE m.org_id = r.org_id AND m.user_id = r.user_id AND {where})"
)
GROUP_JOIN = " JOIN groups g ON g.org_id = m.org_id AND g.group_id = m.group_id"
SOME_MEMBER = (
    "EXISTS (SELECT 1 FROM group_members m{join}"
    " WHERE m.org_id = r.org_id AND m.group_id = r.group_id AND {where})"
)
MEMBER_JOIN = " JOIN users u ON u.org_id = m.org_id AND u.user_id = m.user_id"

# `pr` on a complex or multi-valued document value: some leaf is a non-empty
# string, a boolean or a number
PRESENT_IN_DOCUMENT = (
    'jsonb_path_exists({value}, \'strict $.** ? ((@.type() == "string" && @ != "")'
    ' || @.type() == "boolean" || @.type() == "number")\')'
)

# How a value is held: a text expression, a jsonb expression (booleans in the
# document), or a uuid, boolean or timestamptz column.
Storage = Literal["text", "json", "uuid", "bool", "time"]

# Attributes kept in columns (or computed), by lower-case path; the rest of a
# resource is its document, r.attributes.
_VERSION = "('W/\"' || r.version || '\"')"
_COLUMNS: dict[str, dict[str, tuple[str, Storage]]] = {
    "User": {
        "id": ("r.user_id", "uuid"),
        "externalid": ("r.external_id", "text"),
        "username": ("r.user_name", "text"),
        "displayname": ("r.display_name", "text"),
        # not `active`: read from the document, as the representation shows it
        # (absent once unassigned), where r.active is the activity roles use
        "meta.created": ("r.created_at", "time"),
        "meta.lastmodified": ("r.updated_at", "time"),
        "meta.resourcetype": ("'User'::text", "text"),
        "meta.version": (_VERSION, "text"),
    },
    "Group": {
        "id": ("r.group_id", "uuid"),
        "externalid": ("r.external_id", "text"),
        "displayname": ("r.display_name", "text"),
        "meta.created": ("r.created_at", "time"),
        "meta.lastmodified": ("r.updated_at", "time"),
        "meta.resourcetype": ("'Group'::text", "text"),
        "meta.version": (_VERSION, "text"),
    },
}

# never stored, or known only to the gateway
_UNAVAILABLE = {"password", "meta.location", "groups.$ref", "members.$ref"}

_EQUALITY = {CompareOperator.eq, CompareOperator.ne}
_SUBSTRING = {CompareOperator.co, CompareOperator.sw, CompareOperator.ew}
_SQL_OPERATOR = {
    CompareOperator.eq: "=",
    CompareOperator.gt: ">",
    CompareOperator.ge: ">=",
    CompareOperator.lt: "<",
    CompareOperator.le: "<=",
}
_TEXT_TYPES = {"string", "reference", "binary"}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NAME = re.compile(r"[A-Za-z0-9$_:.-]+")
_SORT_BY = re.compile(r"(?:(urn:.+):)?([A-Za-z$][\w$-]*)(?:\.([A-Za-z$][\w$-]*))?", re.ASCII)


class Params:
    """Collects query parameters; `add` returns the placeholder for a value."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def compile_filter(schema: ResourceSchema, text: str, params: Params) -> str:
    """The SQL condition for a SCIM filter. Raises core.errors.InvalidFilter."""
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(
            f"filter is too long ({len(text)} characters, at most {MAX_FILTER_LENGTH})",
            field="filter",
        )
    try:
        tree = ScimFilter(text).ast
    except InvalidFilterException as e:
        raise InvalidFilter(f"invalid filter: {e}", field="filter") from e
    return _FilterCompiler(_Resolver(schema, InvalidFilter, "filter"), params).visit(tree)


def compile_filter_across(
    schemas: Sequence[ResourceSchema], text: str, params: Params
) -> list[str]:
    """The SQL condition of a SCIM filter for each of several resource types
    searched together (POST /.search), in their order. An attribute one type
    does not have is absent on every resource of that type, and compares as
    any absent attribute does (only `ne`, and `not (…)`, hold); one that no
    type has raises InvalidFilter, as for a single type."""
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(
            f"filter is too long ({len(text)} characters, at most {MAX_FILTER_LENGTH})",
            field="filter",
        )
    try:
        tree = ScimFilter(text).ast
    except InvalidFilterException as e:
        raise InvalidFilter(f"invalid filter: {e}", field="filter") from e
    resolvers = [_Resolver(schema, InvalidFilter, "filter", absent=[]) for schema in schemas]
    compiled = [_FilterCompiler(resolver, params).visit(tree) for resolver in resolvers]
    _refuse_absent_everywhere(resolvers)
    return compiled


def sort_expression(schema: ResourceSchema, sort_by: str) -> str:
    """The SQL expression to ORDER BY for a SCIM sortBy attribute.
    Raises core.errors.InvalidArgument for attributes that cannot be sorted on."""
    return _sort_expression(_Resolver(schema, InvalidArgument, "sortBy"), sort_by)


def sort_expressions_across(schemas: Sequence[ResourceSchema], sort_by: str) -> list[str]:
    """sort_expression for each of several resource types searched together:
    NULL (sorted last) for a type that does not have the attribute."""
    resolvers = [_Resolver(schema, InvalidArgument, "sortBy", absent=[]) for schema in schemas]
    keys = [_sort_expression(resolver, sort_by) for resolver in resolvers]
    _refuse_absent_everywhere(resolvers)
    return keys


def _refuse_absent_everywhere(resolvers: list[_Resolver]) -> None:
    """An attribute path that no resource type has is an error, not absent."""
    first, *others = resolvers
    for label, message in first.absent or []:
        if all(label in {a for a, _ in (other.absent or [])} for other in others):
            raise first.fail(message)


def _sort_expression(resolver: _Resolver, sort_by: str) -> str:
    match = _SORT_BY.fullmatch(sort_by)
    try:
        path = AttrPath(match[2], match[3], match[1]) if match else None
    except ValueError:
        path = None
    if path is None:
        raise InvalidArgument(f'invalid sortBy "{sort_by}"', field="sortBy")
    target = resolver.resolve(path)
    if isinstance(target, _Absent):
        return "NULL"
    if isinstance(target, _Leaf):
        return _sort_key(target)
    if isinstance(target, _Many) and target.array is not None:
        sub = target.sub or target.attr.sub("value")
        if sub is not None and sub.type != "complex":
            key = _sort_key(_JsonElements(target.label, target.array).leaf(sub))
            return PRIMARY_ELEMENT.format(key=key, array=target.array)
    computed = isinstance(target, _Many) and target.array is None
    why = "it is computed from memberships" if computed else "name one of its sub-attributes"
    raise InvalidArgument(f'cannot sort by "{target.label}" ({why})', field="sortBy")


def _sort_key(leaf: _Leaf) -> str:
    if leaf.storage == "json":
        return f"CASE jsonb_typeof({leaf.sql}) WHEN 'boolean' THEN ({leaf.sql})::boolean END"
    if leaf.storage == "text" and not leaf.attr.case_exact:
        return f"lower({leaf.sql})"
    return leaf.sql


# ---- what an attribute path designates


@dataclass(frozen=True)
class _Leaf:
    """A single value: an SQL expression and the attribute it holds."""

    label: str  # the attribute's canonical path, for messages
    attr: Attr
    sql: str
    storage: Storage


@dataclass(frozen=True)
class _Complex:
    """A single-valued complex attribute; `json` is None when always present (meta)."""

    label: str
    attr: Attr
    json: str | None


@dataclass(frozen=True)
class _Many:
    """A multi-valued attribute, optionally narrowed to one sub-attribute."""

    label: str
    attr: Attr
    sub: Attr | None
    elements: Callable[[], _Elements]
    array: str | None = None  # the jsonb array, when kept in the document


@dataclass(frozen=True)
class _Absent:
    """An attribute the resource type does not have (searching several types)."""

    label: str


class _Elements:
    """The elements of a multi-valued attribute, as one subquery."""

    def leaf(self, sub: Attr) -> _Leaf:
        raise NotImplementedError

    def exists(self, where: str) -> str:
        raise NotImplementedError


@dataclass
class _JsonElements(_Elements):
    label: str
    array: str

    def leaf(self, sub: Attr) -> _Leaf:
        return _json_leaf(f"{self.label}.{sub.name}", sub, "elem.v", sub.name)

    def exists(self, where: str) -> str:
        return SOME_ELEMENT.format(array=self.array, where=where)


@dataclass
class _GroupsOfUser(_Elements):
    joined: bool = False

    def leaf(self, sub: Attr) -> _Leaf:
        if sub.name == "value":
            return _Leaf("groups.value", sub, "m.group_id", "uuid")
        if sub.name == "display":
            self.joined = True
            return _Leaf("groups.display", sub, "g.display_name", "text")
        return _Leaf("groups.type", sub, "'direct'::text", "text")

    def exists(self, where: str) -> str:
        return SOME_GROUP.format(join=GROUP_JOIN if self.joined else "", where=where)


@dataclass
class _MembersOfGroup(_Elements):
    joined: bool = False

    def leaf(self, sub: Attr) -> _Leaf:
        if sub.name == "value":
            return _Leaf("members.value", sub, "m.user_id", "uuid")
        if sub.name == "display":
            self.joined = True
            display = "coalesce(nullif(u.display_name, ''), u.user_name)"
            return _Leaf("members.display", sub, display, "text")
        return _Leaf("members.type", sub, "'User'::text", "text")

    def exists(self, where: str) -> str:
        return SOME_MEMBER.format(join=MEMBER_JOIN if self.joined else "", where=where)


def _key(name: str) -> str:
    """A canonical attribute name as an SQL literal (never a client's text)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not an attribute name: {name!r}")
    return f"'{name}'"


def _json_leaf(label: str, attr: Attr, parent: str, name: str) -> _Leaf:
    if attr.type == "boolean":
        return _Leaf(label, attr, f"{parent}->{_key(name)}", "json")
    return _Leaf(label, attr, f"{parent}->>{_key(name)}", "text")


@dataclass(frozen=True)
class _Resolver:
    """Binds attribute paths of one resource type to what holds them."""

    schema: ResourceSchema
    error: type[InvalidArgument]
    where: str  # "filter" or "sortBy", for messages
    # when several types are searched together: the paths this type does not
    # have, with the error each would be alone, instead of raising it
    absent: list[tuple[str, str]] | None = None

    def fail(self, message: str) -> InvalidArgument:
        return self.error(message, field=self.where)

    def unknown(self, path: AttrPath, message: str) -> _Absent:
        if self.absent is None:
            raise self.fail(message)
        self.absent.append((str(path).lower(), message))
        return _Absent(str(path))

    def resolve(self, path: AttrPath) -> _Leaf | _Complex | _Many | _Absent:
        schema = self.schema
        if path.uri is not None and path.uri.lower() != schema.core_urn.lower():
            whole = schema.extension_urn(f"{path.uri}:{path.attr}")
            if whole is not None and path.sub_attr is None:  # the extension itself
                return _Complex(whole, Attr(whole, "complex"), f"r.attributes->{_key(whole)}")
            if schema.extension_urn(path.uri) is None:
                return self.unknown(path, f'unknown schema "{path.uri}" in {self.where}')
        attr = schema.attr(path.attr, path.uri)
        if attr is None:
            hint = self._hint(path)
            return self.unknown(path, f'unknown attribute "{path}" in {self.where}{hint}')
        sub: Attr | None = None
        if path.sub_attr is not None:
            sub = attr.sub(path.sub_attr)
            if not attr.sub_attrs:
                raise self.fail(f'"{attr.name}" has no sub-attributes ({self.where}: "{path}")')
            if sub is None:
                return self.unknown(
                    path,
                    f'unknown sub-attribute "{path.sub_attr}" of "{attr.name}" in {self.where}',
                )
        label = attr.name if sub is None else f"{attr.name}.{sub.name}"
        if label.lower() in _UNAVAILABLE:
            raise self.fail(f'"{label}" cannot be used in a {self.where}')
        if attr.uri != schema.core_urn:  # an extension's attribute
            label = f"{attr.uri}:{label}"
            document = f"r.attributes->{_key(attr.uri)}"
        else:
            column = _COLUMNS[schema.name].get(label.lower())
            if column is not None:
                return _Leaf(label, sub or attr, *column)
            document = "r.attributes"
        if attr.name == "meta":
            return _Complex(label, attr, None)
        if attr.name == "groups" and schema.name == "User":
            return _Many(label, attr, sub, _GroupsOfUser)
        if attr.name == "members" and schema.name == "Group":
            return _Many(label, attr, sub, _MembersOfGroup)
        value = f"{document}->{_key(attr.name)}"
        if attr.multi_valued:
            return _Many(label, attr, sub, lambda: _JsonElements(label, value), value)
        if sub is not None:
            return _json_leaf(label, sub, value, sub.name)
        if attr.type == "complex":
            return _Complex(label, attr, value)
        return _json_leaf(label, attr, document, attr.name)

    def _hint(self, path: AttrPath) -> str:
        if path.uri is None:
            for urn, attrs in self.schema.extensions.items():
                if path.attr.lower() in attrs:
                    canonical = self.schema.extension_urns[urn]
                    return f' (did you mean "{canonical}:{path}"?)'
        return ""


# ---- the compiler


class _FilterCompiler(FilterVisitor[str]):
    """Compiles a filter tree to SQL. Inside a value path (`emails[...]`),
    `inside` holds the attribute and its elements' subquery."""

    def __init__(
        self,
        resolver: _Resolver,
        params: Params,
        inside: tuple[_Many, _Elements] | None = None,
    ) -> None:
        self.resolver = resolver
        self.params = params
        self.inside = inside

    def fail(self, message: str) -> InvalidArgument:
        return self.resolver.fail(message)

    # -- structure

    def visit_logical_expr(self, node: LogicalExpr) -> str:
        joiner = " AND " if node.op == LogicalOperator.and_ else " OR "
        return joiner.join(f"({self.visit(term)})" for term in node.terms)

    def visit_not(self, node: Not) -> str:
        return f"({self.visit(node.expr)}) IS NOT TRUE"

    # -- attributes

    def _element(self, path: AttrPath) -> _Leaf:
        """A sub-attribute named inside a value path."""
        assert self.inside is not None
        many, elements = self.inside
        sub = many.attr.sub(path.attr)
        if path.uri is not None or path.sub_attr is not None or sub is None:
            raise self.fail(f'unknown sub-attribute "{path}" of "{many.label}" in filter')
        if f"{many.attr.name}.{sub.name}".lower() in _UNAVAILABLE:
            raise self.fail(f'"{many.attr.name}.{sub.name}" cannot be used in a filter')
        return elements.leaf(sub)

    def visit_present(self, node: Present) -> str:
        if self.inside is not None:
            return _present(self._element(node.attr_path))
        target = self.resolver.resolve(node.attr_path)
        if isinstance(target, _Absent):
            return "FALSE"
        if isinstance(target, _Leaf):
            return _present(target)
        if isinstance(target, _Complex):
            return "TRUE" if target.json is None else PRESENT_IN_DOCUMENT.format(value=target.json)
        elements = target.elements()
        if target.sub is not None:
            return elements.exists(_present(elements.leaf(target.sub)))
        if target.array is not None:
            return PRESENT_IN_DOCUMENT.format(value=target.array)
        return elements.exists("TRUE")

    def visit_comparison(self, node: Comparison) -> str:
        op, value = node.op, node.value
        if self.inside is not None:
            return self._compare(self._element(node.attr_path), op, value)
        target = self.resolver.resolve(node.attr_path)
        if isinstance(target, _Absent):  # as an absent value: only `ne` holds
            return "TRUE" if op == CompareOperator.ne else "FALSE"
        if isinstance(target, _Leaf):
            return self._compare(target, op, value)
        if isinstance(target, _Complex):
            example = next(iter(target.attr.sub_attrs.values()), None)
            hint = f' (e.g. "{target.label}.{example.name}")' if example else ""
            raise self.fail(f'"{target.label}" is complex: compare one of its sub-attributes{hint}')
        sub = target.sub or target.attr.sub("value")
        if sub is None:
            raise self.fail(
                f'"{target.label}" has no "value": compare one of its sub-attributes'
                f' (e.g. "{target.label}.type")'
            )
        if op in _EQUALITY and self._is_email_value(target, sub):
            found = USER_EMAIL_IS.format(value=self.params.add(self._text("emails.value", value)))
            return found if op == CompareOperator.eq else f"NOT ({found})"
        elements = target.elements()
        leaf = elements.leaf(sub)
        if op == CompareOperator.ne:  # no value equals the operand
            return f"NOT {elements.exists(self._compare(leaf, CompareOperator.eq, value))}"
        return elements.exists(self._compare(leaf, op, value))

    def visit_value_path(self, node: ValuePath) -> str:
        if self.inside is not None or node.sub_attr is not None:
            raise self.fail(f'invalid value path "{node}" in filter')
        target = self.resolver.resolve(node.attr_path)
        if isinstance(target, _Absent):
            return "FALSE"
        if not isinstance(target, _Many) or target.sub is not None:
            raise self.fail(
                f'"{target.label}" is not multi-valued: "{target.label}[...]" selects nothing'
            )
        # emails[value eq "x" ...]: let the index of user_emails find the users
        email: str | None = None
        if self._is_email_value(target, target.attr.sub("value")):
            whole = node.val_filter
            and_ = isinstance(whole, LogicalExpr) and whole.op == LogicalOperator.and_
            terms = whole.terms if isinstance(whole, LogicalExpr) and and_ else (whole,)
            for term in terms:
                if isinstance(term, Comparison) and _is_value_eq(term):
                    operand = self.params.add(self._text("emails.value", term.value))
                    email = USER_EMAIL_IS.format(value=operand)
                    if term is whole:
                        return email
                    break
        elements = target.elements()
        inner = _FilterCompiler(self.resolver, self.params, (target, elements))
        found = elements.exists(inner.visit(node.val_filter))
        return found if email is None else f"{email} AND {found}"

    def _is_email_value(self, target: _Many, sub: Attr | None) -> bool:
        return (
            self.resolver.schema.name == "User"
            and target.attr.name == "emails"
            and target.attr.uri == USER_URN
            and sub is not None
            and sub.name == "value"
        )

    # -- comparisons

    def _not_null(self, label: str, value: Any) -> None:
        if value is None:
            raise self.fail(
                f'cannot compare "{label}" with null: use "{label} pr" or "not ({label} pr)"'
            )

    def _text(self, label: str, value: Any) -> str:
        self._not_null(label, value)
        if not isinstance(value, str):
            raise self.fail(
                f'"{label}" is a string: compare it with a quoted string, not {_show(value)}'
            )
        if "\x00" in value:
            raise self.fail(f'the value compared with "{label}" contains a NUL character')
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail(
                f'the value compared with "{label}" is not valid Unicode (a lone surrogate)'
            ) from None
        return value

    def _compare(self, leaf: _Leaf, op: CompareOperator, value: Any) -> str:
        label, kind = leaf.label, leaf.attr.type
        self._not_null(label, value)
        if leaf.storage in ("bool", "json"):
            if op not in _EQUALITY:
                raise self.fail(
                    f'operator "{op}" cannot be used on the boolean attribute "{label}"'
                )
            if not isinstance(value, bool):
                raise self.fail(
                    f'"{label}" is a boolean: compare it with true or false, not {_show(value)}'
                )
            operand = self.params.add(value)
            if leaf.storage == "json":
                operand = f"to_jsonb({operand}::boolean)"
            return _operator(leaf.sql, op, operand)
        if leaf.storage == "time":
            if op in _SUBSTRING:
                raise self.fail(
                    f'operator "{op}" cannot be used on the dateTime attribute "{label}"'
                )
            return _operator(leaf.sql, op, self.params.add(self._timestamp(label, value)))
        if leaf.storage not in ("text", "uuid") or kind not in _TEXT_TYPES:
            raise self.fail(f'filtering on "{label}" ({kind}) is not supported')
        if kind == "binary" and op not in _EQUALITY:
            raise self.fail(f'operator "{op}" cannot be used on the binary attribute "{label}"')
        text = self._text(label, value)
        sql = leaf.sql
        if leaf.storage == "uuid":
            if op in _EQUALITY:  # ids are UUIDs: compare as such, from the index
                if not _UUID.fullmatch(text):
                    return "FALSE" if op == CompareOperator.eq else "TRUE"
                return _operator(sql, op, f"{self.params.add(text)}::uuid")
            sql = f"{sql}::text"
        fold = not leaf.attr.case_exact
        if fold:
            sql = f"lower({sql})"
        if op in _SUBSTRING:
            pattern = _like_escape(text)
            pattern = {"co": f"%{pattern}%", "sw": f"{pattern}%", "ew": f"%{pattern}"}[op.value]
            operand = self.params.add(pattern)
            operand = f"lower({operand})" if fold else operand
            return f"{sql} LIKE {operand} ESCAPE '\\'"
        operand = self.params.add(text)
        operand = f"lower({operand})" if fold else operand
        if op in _EQUALITY:
            return _operator(sql, op, operand)
        return _operator(f'{sql} COLLATE "C"', op, operand)

    def _timestamp(self, label: str, value: Any) -> datetime:
        example = 'e.g. "2011-05-13T04:42:34Z"'
        if not isinstance(value, str):
            raise self.fail(f'"{label}" is a dateTime: compare it with a string ({example})')
        try:
            stamp = datetime.fromisoformat(value)
            if stamp.tzinfo is None:  # xsd:dateTime without a zone: take it as UTC
                stamp = stamp.replace(tzinfo=UTC)
            return stamp.astimezone(UTC)
        except (ValueError, OverflowError):
            raise self.fail(f'invalid dateTime "{value}" for "{label}" ({example})') from None


def _present(leaf: _Leaf) -> str:
    if leaf.storage == "text":
        return f"{leaf.sql} <> ''"
    if leaf.storage == "json":
        return f"jsonb_typeof({leaf.sql}) = 'boolean'"
    return f"{leaf.sql} IS NOT NULL"


def _is_value_eq(node: Comparison) -> bool:
    """`value eq ...`, inside a value path."""
    return (
        node.op == CompareOperator.eq
        and node.attr_path.uri is None
        and node.attr_path.sub_attr is None
        and node.attr_path.attr.lower() == "value"
    )


def _operator(sql: str, op: CompareOperator, operand: str) -> str:
    """`ne` holds against NULL (an absent value); the others do not."""
    if op == CompareOperator.ne:
        return f"{sql} IS DISTINCT FROM {operand}"
    return f"{sql} {_SQL_OPERATOR[op]} {operand}"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).lower() if isinstance(value, bool) else str(value)
