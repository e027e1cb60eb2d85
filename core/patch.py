"""SCIM PATCH (RFC 7644 §3.5.2) applied to a stored document, as real identity
providers send it (see shared/reference/idp-scim-traffic.md).

Accepted beyond the letter of the RFC, because Okta or Entra send it:

- `op` in any case (`Replace`, `ADD`);
- booleans as the strings "True"/"False" (via core.documents);
- path-less `add`/`replace` whose value keys are paths (`name.givenName`,
  `urn:…:enterprise:2.0:User:employeeNumber`); `schemas`, `id`, `meta`,
  `groups`, `password`, other read-only and unknown attributes in such a value
  are ignored, as in a POST body;
- `replace`/`add` through a filter that matches nothing, when the filter is only
  `eq` comparisons joined by `and`: a new value is made from them
  (`emails[type eq "work"].value`);
- null, "" or {"value": ""} as the value of `replace`/`add`: the attribute is
  cleared (the manager removal of Entra);
- `remove` of `members` with a value listing the members to remove.

Group members never enter the document: their changes come back as
MemberChanges, for the caller to apply against group_members.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from scim2_models import Path, SCIMException
from scim2_models.path import (
    AttrPath,
    CompareOperator,
    Comparison,
    FilterNode,
    FilterVisitor,
    LogicalExpr,
    LogicalOperator,
    Not,
    PathNode,
    Present,
    ValuePath,
)

from core import documents
from core.documents import ABSENT, MAX_VALUES
from core.errors import (
    CoreError,
    InvalidArgument,
    InvalidFilter,
    InvalidPath,
    InvalidSyntax,
    Mutability,
    NoTarget,
    TooMany,
)
from core.schema import Attr, ResourceSchema

MAX_OPERATIONS = 1000
MAX_OP_LENGTH = 32  # characters of an operation's "op" (the longest valid one is 7)
MAX_PATH_LENGTH = 4096  # characters of an operation's "path"

# keys of a path-less value that are never attributes to patch
_IGNORED_KEYS = frozenset({"schemas", "meta", "id", "groups", "password"})


@dataclass(frozen=True)
class Operation:
    op: str  # as sent: "add", "Replace", ...
    path: str  # "" when the request had none
    value: Any  # JSON value; meaningful only when has_value
    has_value: bool


@dataclass
class MemberChanges:
    """What a PATCH does to a group's membership, net of its operations in order.

    When `replace` is not None the membership becomes exactly that list; then
    `add` ids are added and `remove` ids removed. An id is never in both sets.
    """

    replace: list[str] | None = None
    add: set[str] = field(default_factory=set)
    remove: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return self.replace is None and not self.add and not self.remove

    def add_ids(self, ids: list[str]) -> None:
        if self.replace is not None:
            self.replace.extend(i for i in ids if i not in self.replace)
            return
        self.remove.difference_update(ids)
        self.add.update(ids)

    def remove_ids(self, ids: list[str]) -> None:
        if self.replace is not None:
            gone = set(ids)
            self.replace = [i for i in self.replace if i not in gone]
            return
        self.add.difference_update(ids)
        self.remove.update(ids)

    def replace_ids(self, ids: list[str]) -> None:
        self.replace = list(dict.fromkeys(ids))
        self.add.clear()
        self.remove.clear()


@dataclass
class PatchResult:
    document: dict[str, Any]  # the new stored document (see core.documents)
    members: MemberChanges  # only ever non-empty for groups
    changed: list[str]  # canonical names of the top-level attributes touched, for the audit


def apply(
    schema: ResourceSchema, document: dict[str, Any], operations: list[Operation]
) -> PatchResult:
    """Apply the operations in order to a copy of `document`; all or nothing.

    Raises core.errors.InvalidPath / NoTarget / InvalidArgument / Mutability / InvalidFilter
    with a message that names the operation (1-based index) and its path.
    """
    if len(operations) > MAX_OPERATIONS:
        raise TooMany(
            f"a PATCH may hold at most {MAX_OPERATIONS} operations, not {len(operations)}",
            field="Operations",
        )
    patcher = _Patcher(schema, copy.deepcopy(document))
    for index, operation in enumerate(operations, start=1):
        try:
            patcher.run(operation)
        except CoreError as exc:
            message = f"{_describe(index, operation)}: {exc.message}"
            raise type(exc)(message, field=exc.field) from None
    try:
        result = documents.normalize(schema, patcher.document)
    except CoreError as exc:
        message = f"the {schema.name} the PATCH would produce is invalid: {exc.message}"
        raise type(exc)(message, field=exc.field) from None
    return PatchResult(result, patcher.members, sorted(patcher.changed))


def _describe(index: int, operation: Operation) -> str:
    op = operation.op.lower() if isinstance(operation.op, str) else "?"
    path = operation.path if isinstance(operation.path, str) else ""
    if len(path) > 200:
        path = path[:200] + "…"
    quoted = f" {json.dumps(path, ensure_ascii=False)}" if path else ""
    return f"operation {index} ({op}{quoted})"


# ---- what a path designates


@dataclass(frozen=True)
class _Ignored:
    """`password` (accepted, never stored) and `schemas` (computed on output)."""


@dataclass(frozen=True)
class _Root:
    """The resource itself: a bare core schema URN as the path."""


@dataclass(frozen=True)
class _Members:
    val_filter: FilterNode | None


@dataclass(frozen=True)
class _Extension:
    urn: str  # canonical URN of a known extension, the whole object


@dataclass(frozen=True)
class _Unknown:
    key: str  # the document key of an unknown schema URN
    name: str | None  # an attribute in it, or None for the whole object
    sub: str | None  # a key in that attribute's object


@dataclass(frozen=True)
class _Attribute:
    attr: Attr
    name: str  # qualified, for messages and `changed`
    sub: Attr | None
    val_filter: FilterNode | None


_Target = _Ignored | _Root | _Members | _Extension | _Unknown | _Attribute
_NO_VALUE = object()
_BOOLEANS = ("true", "false")


class _Patcher:
    def __init__(self, schema: ResourceSchema, document: dict[str, Any]) -> None:
        self.schema = schema
        self.document = document
        self.members = MemberChanges()
        self.changed: set[str] = set()

    def run(self, operation: Operation) -> None:
        op = operation.op.lower() if isinstance(operation.op, str) else ""
        if op not in ("add", "replace", "remove"):
            raise InvalidArgument(
                f"unknown operation {json.dumps(operation.op)}; expected add, replace or remove",
                field="op",
            )
        path = operation.path.strip() if isinstance(operation.path, str) else None
        if path is None:
            raise InvalidPath("the path must be a string", field="path")
        value = operation.value if operation.has_value else _NO_VALUE
        if op != "remove" and value is _NO_VALUE:
            raise InvalidArgument(f'"{op}" needs a value', field="value")
        if not path:
            if op == "remove":
                raise NoTarget('"remove" needs a path', field="path")
            self._without_path(op, value)
            return
        self._apply(op, self._resolve(path), value)

    # -- paths

    def _resolve(self, text: str) -> _Target:
        node = _parse(text)
        val_filter: FilterNode | None = None
        if isinstance(node, Comparison | Present):
            node = _as_value_path(node)
        if isinstance(node, ValuePath):
            attr_path, val_filter, sub_name = node.attr_path, node.val_filter, node.sub_attr
        else:
            attr_path, sub_name = node, node.sub_attr
        uri, name = attr_path.uri, attr_path.attr
        full = f"{uri}:{name}" if uri else name
        schema = self.schema
        if uri is not None and (full.lower() == schema.core_urn.lower()):
            if sub_name is not None or val_filter is not None:
                raise InvalidPath(f'unknown attribute "{text}"', field="path")
            return _Root()
        extension = schema.extension_urn(full) if uri is not None else None
        if extension is not None:
            if sub_name is not None or val_filter is not None:
                raise InvalidPath(f'unknown attribute "{text}"', field="path")
            return _Extension(extension)
        if uri is not None and uri.lower() != schema.core_urn.lower():
            extension = schema.extension_urn(uri)
            if extension is None:
                return self._unknown_urn(uri, name, sub_name, val_filter)
        attr = schema.attr(name, extension)
        if attr is None:
            if name.lower() == "schemas" and uri is None:
                return _Ignored()
            raise InvalidPath(f'unknown attribute "{full}"', field="path")
        qualified = documents.qualified_name(schema, attr)
        if attr.name == "password":
            return _Ignored()
        if attr.mutability == "readOnly":
            raise Mutability(f'"{qualified}" is read-only', field=qualified)
        if schema.name == "Group" and attr.name == "members":
            if sub_name is not None:
                raise InvalidPath(
                    'only whole members can be patched, not "members.<sub-attribute>"',
                    field="members",
                )
            return _Members(val_filter)
        sub: Attr | None = None
        if sub_name is not None:
            if attr.type != "complex":
                raise InvalidPath(f'"{qualified}" has no sub-attributes', field=qualified)
            sub = attr.sub(sub_name)
            if sub is None:
                raise InvalidPath(
                    f'unknown sub-attribute "{sub_name}" of "{qualified}"', field=qualified
                )
            if sub.mutability == "readOnly":
                raise Mutability(f'"{qualified}.{sub.name}" is read-only', field=qualified)
        if val_filter is not None:
            if not attr.multi_valued or attr.type != "complex":
                raise InvalidFilter(
                    f'"{qualified}" is not a multi-valued complex attribute and takes no filter',
                    field=qualified,
                )
            _check_filter(attr, qualified, val_filter)
        return _Attribute(attr, qualified, sub, val_filter)

    def _unknown_urn(
        self, uri: str, name: str, sub: str | None, val_filter: FilterNode | None
    ) -> _Unknown:
        """Under an unknown schema URN nothing tells where the URN ends: a key of the
        document decides, else a last segment naming the resource type ("…:User"),
        else the parser's reading (the URN ends at the last colon)."""
        full = f"{uri}:{name}"
        if documents.is_reserved_urn(uri):
            raise InvalidPath(f'unknown attribute "{full}"', field="path")
        if val_filter is not None:
            raise InvalidPath(f'filters are not supported under the unknown schema "{uri}"')
        whole = self._document_key(full)
        if whole is not None:
            return _Unknown(whole, sub, None)
        if sub is None and name.lower() == self.schema.name.lower():
            return _Unknown(full, None, None)
        return _Unknown(self._document_key(uri) or uri, name, sub)

    def _document_key(self, urn: str) -> str | None:
        lowered = urn.lower()
        return next((k for k in self.document if k.lower() == lowered), None)

    # -- operations

    def _without_path(self, op: str, value: Any, nested: bool = False) -> None:
        if not isinstance(value, dict):
            raise InvalidArgument(
                "without a path, the value must be an object of attributes, "
                f"not {documents.json_type(value)}",
                field="value",
            )
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidSyntax("attribute names must be strings")
            lowered = key.lower()
            if lowered in _IGNORED_KEYS:
                continue
            if (
                lowered.startswith("urn:")
                and isinstance(item, dict)
                and self.schema.extension_urn(key) is None
                and lowered != self.schema.core_urn.lower()
                and self.schema.split_urn_path(key)[0] is None
                and not documents.is_reserved_urn(key)
            ):
                # as in a POST body: an unknown URN with an object is that schema's part
                documents.check_string(key, "a schema URN")
                self._apply(op, _Unknown(self._document_key(key) or key, None, None), item)
                continue
            try:
                target = self._resolve(key)
            except (InvalidPath, Mutability):
                continue  # unknown and read-only attributes are ignored, as in a POST body
            if isinstance(target, _Root):
                if nested:
                    raise InvalidArgument(f'"{key}" cannot be nested in itself', field=key)
                self._without_path(op, item, nested=True)
            else:
                self._apply(op, target, item)

    def _apply(self, op: str, target: _Target, value: Any) -> None:
        if isinstance(target, _Ignored):
            return
        if isinstance(target, _Root):
            if op == "remove":
                raise NoTarget('"remove" needs an attribute path')
            self._without_path(op, value)
        elif isinstance(target, _Members):
            self._members(op, target, value)
        elif isinstance(target, _Extension):
            self._extension(op, target.urn, value)
        elif isinstance(target, _Unknown):
            self._unknown(op, target, value)
        elif target.val_filter is not None:
            self._filtered(op, target, target.val_filter, value)
        elif target.sub is not None:
            self._sub_attribute(op, target, target.sub, value)
        else:
            self._attribute(op, target, value)

    def _members(self, op: str, target: _Members, value: Any) -> None:
        self.changed.add("members")
        if target.val_filter is not None:
            if op != "remove":
                raise InvalidPath(
                    f'a filtered "members" path supports only remove, not {op}', field="members"
                )
            self.members.remove_ids(_member_filter_ids(target.val_filter))
        elif op == "add":
            if value is not None and value != "":
                self.members.add_ids(documents.member_values(value))
        elif op == "replace":
            empty = value is None or value == ""
            self.members.replace_ids([] if empty else documents.member_values(value))
        elif value is _NO_VALUE or value is None:
            self.members.replace_ids([])  # RFC 7644: remove without a value removes all
        else:
            # Entra: {"op": "Remove", "path": "members", "value": [{"value": id}, ...]}
            self.members.remove_ids(documents.member_values(value))

    def _extension(self, op: str, urn: str, value: Any) -> None:
        attrs = self.schema.extensions[urn.lower()]
        if op == "remove" or value is None or value == "":
            removed = self.document.pop(urn, None) or {}
            self.changed.update(f"{urn}:{name}" for name in removed)
            return
        if not isinstance(value, dict):
            raise InvalidArgument(
                f'"{urn}" must be an object, not {documents.json_type(value)}', field=urn
            )
        for key, item in value.items():
            attr = attrs.get(key.lower()) if isinstance(key, str) else None
            if attr is None or not documents.is_stored(attr):
                continue
            name = documents.qualified_name(self.schema, attr)
            self._attribute(op, _Attribute(attr, name, None, None), item)

    def _container(self, attr: Attr, create: bool) -> dict[str, Any] | None:
        """The object an attribute lives in: the document, or its extension's object."""
        if attr.uri.lower() == self.schema.core_urn.lower():
            return self.document
        container = self.document.get(attr.uri)
        if container is None and create:
            container = self.document[attr.uri] = {}
        return container if isinstance(container, dict) else None

    def _tidy(self, attr: Attr) -> None:
        container = self._container(attr, create=False)
        if container is not None and container is not self.document and not container:
            del self.document[attr.uri]

    def _clear(self, target: _Attribute) -> None:
        if target.attr.required:
            raise InvalidArgument(
                f'"{target.name}" is required and cannot be removed', field=target.name
            )
        container = self._container(target.attr, create=False)
        if container is not None:
            container.pop(target.attr.name, None)
            self._tidy(target.attr)

    def _attribute(self, op: str, target: _Attribute, value: Any) -> None:
        """A whole attribute: `active`, `name`, `emails`, `urn:…:User:manager`."""
        attr = target.attr
        self.changed.add(target.name)
        if op == "remove":
            if attr.multi_valued and value is not _NO_VALUE and value is not None:
                self._remove_listed(target, value)
            else:
                self._clear(target)
            return
        normalized = documents.attribute_value(attr, _unwrap(attr, value), target.name)
        if normalized is ABSENT:
            if op == "replace" or not attr.multi_valued:
                self._clear(target)
            return
        if attr.required and isinstance(normalized, str) and not normalized.strip():
            raise InvalidArgument(f'"{target.name}" must not be blank', field=target.name)
        container = self._container(attr, create=True)
        assert container is not None
        current = container.get(attr.name)
        if attr.multi_valued and op == "add" and isinstance(current, list):
            added = [v for v in normalized if v not in current]
            current.extend(added)
            _one_primary(current, added)
            _check_count(current, target.name)
        elif attr.type == "complex" and not attr.multi_valued and isinstance(current, dict):
            if "value" in normalized:
                container[attr.name] = normalized  # a new referenced thing: its old $ref goes
            else:
                current.update(normalized)  # RFC 7644 §3.5.2.3: other sub-attributes stay
        else:
            container[attr.name] = normalized

    def _remove_listed(self, target: _Attribute, value: Any) -> None:
        """`remove` of a multi-valued attribute with a value: remove the values that
        have all the sub-attributes given (as Entra removes members)."""
        given = documents.attribute_value(target.attr, value, target.name)
        container = self._container(target.attr, create=False)
        current = container.get(target.attr.name) if container is not None else None
        if given is ABSENT or not isinstance(current, list):
            return
        kept = [
            item
            for item in current
            if not any(all(item.get(k) == v for k, v in g.items()) for g in given)
        ]
        self._store_list(target, kept)

    def _store_list(self, target: _Attribute, values: list[Any]) -> None:
        container = self._container(target.attr, create=True)
        assert container is not None
        values = [v for v in values if v != {}]
        if values:
            container[target.attr.name] = values
        else:
            container.pop(target.attr.name, None)
            self._tidy(target.attr)

    def _sub_attribute(self, op: str, target: _Attribute, sub: Attr, value: Any) -> None:
        """`name.familyName`, `urn:…:User:manager.value`, `emails.type` (every email)."""
        attr = target.attr
        self.changed.add(target.name)
        where = f"{target.name}.{sub.name}"
        normalized = (
            ABSENT if op == "remove" else documents.attribute_value(sub, _unwrap(sub, value), where)
        )
        container = self._container(attr, create=normalized is not ABSENT)
        current = container.get(attr.name) if container is not None else None
        if not attr.multi_valued:
            if normalized is ABSENT:
                if isinstance(current, dict):
                    current.pop(sub.name, None)
                    if not current:
                        self._clear(target)
                return
            assert container is not None
            if not isinstance(current, dict):
                current = container[attr.name] = {}
            current[sub.name] = normalized
            return
        values = current if isinstance(current, list) else []
        if normalized is ABSENT:
            for item in values:
                item.pop(sub.name, None)
        elif values:
            for item in values:
                item[sub.name] = normalized
        else:
            values = [{sub.name: normalized}]
        self._store_list(target, values)

    def _filtered(self, op: str, target: _Attribute, val_filter: FilterNode, value: Any) -> None:
        """`emails[type eq "work"]` and `emails[type eq "work"].value`."""
        attr, sub = target.attr, target.sub
        self.changed.add(target.name)
        container = self._container(attr, create=False)
        current = container.get(attr.name) if container is not None else None
        values: list[Any] = list(current) if isinstance(current, list) else []
        matches = [item for item in values if _Match(attr, item).visit(val_filter)]
        if op == "remove":
            if sub is None:
                values = [item for item in values if item not in matches]
            else:
                for item in matches:
                    item.pop(sub.name, None)
            self._store_list(target, values)
            return
        if sub is not None:
            new: Any = documents.attribute_value(
                sub, _unwrap(sub, value), f"{target.name}.{sub.name}"
            )
        else:
            new = documents.attribute_value(attr, value, target.name)
            if new is not ABSENT and len(new) != 1:
                raise InvalidArgument(
                    f'a filtered path takes one value of "{target.name}", not {len(new)}',
                    field=target.name,
                )
            new = ABSENT if new is ABSENT else new[0]
        written: list[Any] = []
        if not matches:
            if new is ABSENT:
                return
            made = _from_filter(attr, val_filter)
            if made is None:
                raise NoTarget(
                    f'no value of "{target.name}" matches [{val_filter}]', field=target.name
                )
            made.update({sub.name: new} if sub is not None else new)
            values.append(made)
            written.append(made)
        for index, item in enumerate(values):
            if not any(item is m for m in matches):
                continue
            if new is ABSENT:
                if sub is not None:
                    item.pop(sub.name, None)
                else:
                    values[index] = {}
            elif sub is not None:
                item[sub.name] = new
                written.append(item)
            else:
                values[index] = dict(new) if op == "replace" else {**item, **new}
                written.append(values[index])
        _one_primary(values, written)
        _check_count(values, target.name)
        self._store_list(target, values)

    def _unknown(self, op: str, target: _Unknown, value: Any) -> None:
        """Attributes under an unknown schema URN, stored as sent."""
        key = target.key
        where = key if target.name is None else f"{key}:{target.name}"
        self.changed.add(where)
        clear = op == "remove" or value is None or value == ""
        stored = self.document.get(key)
        if target.name is None:
            if clear:
                self.document.pop(key, None)
                return
            if not isinstance(value, dict):
                raise InvalidArgument(
                    f'"{key}" must be an object, not {documents.json_type(value)}', field=key
                )
            merged = dict(stored) if isinstance(stored, dict) else {}
            merged.update(documents.unknown_value(value, key))
            self.document[key] = merged
            return
        if not isinstance(stored, dict):
            if clear:
                return
            stored = self.document[key] = {}
        name = next((k for k in stored if k.lower() == target.name.lower()), target.name)
        if target.sub is not None:
            inner = stored.get(name)
            if clear:
                if isinstance(inner, dict):
                    inner.pop(target.sub, None)
            else:
                if not isinstance(inner, dict):
                    inner = stored[name] = {}
                inner[target.sub] = documents.unknown_value(value, f"{where}.{target.sub}")
        elif clear:
            stored.pop(name, None)
        elif op == "add" and isinstance(stored.get(name), list):
            added = documents.unknown_value(value if isinstance(value, list) else [value], where)
            stored[name].extend(v for v in added if v not in stored[name])
        else:
            stored[name] = documents.unknown_value(value, where)
        if not stored:
            del self.document[key]


# ---- paths and filters


def _parse(text: str) -> PathNode:
    try:
        node = Path(text).ast
    except SCIMException as exc:
        raise InvalidPath(f"invalid path: {exc.detail}", field="path") from None
    except ValueError as exc:
        raise InvalidPath(f"invalid path: {exc}", field="path") from None
    if node is None:
        raise InvalidPath("empty path", field="path")
    return node


def _as_value_path(node: Comparison | Present) -> ValuePath:
    """`emails.type eq "work"` (RFC 7644 errata 7122) means `emails[type eq "work"]`."""
    inner_path = AttrPath(attr=node.attr_path.sub_attr or "value")
    head = AttrPath(attr=node.attr_path.attr, uri=node.attr_path.uri)
    inner: FilterNode
    if isinstance(node, Present):
        inner = Present(attr_path=inner_path)
    else:
        inner = Comparison(attr_path=inner_path, op=node.op, value=node.value)
    return ValuePath(attr_path=head, val_filter=inner)


def _filter_sub(attr: Attr, name: str, attr_path: AttrPath) -> Attr:
    sub = attr.sub(attr_path.attr)
    if sub is None or attr_path.sub_attr is not None or attr_path.uri is not None:
        raise InvalidFilter(
            f'unknown sub-attribute "{attr_path}" of "{name}" in the filter', field=name
        )
    return sub


def _check_filter(attr: Attr, name: str, node: FilterNode) -> None:
    """Every attribute a value filter names is a sub-attribute of `attr`."""
    if isinstance(node, Comparison):
        sub = _filter_sub(attr, name, node.attr_path)
        if sub.type == "boolean" and node.op not in (CompareOperator.eq, CompareOperator.ne):
            raise InvalidFilter(
                f'"{node.op.value}" does not apply to the boolean "{name}.{sub.name}"',
                field=name,
            )
    elif isinstance(node, Present):
        _filter_sub(attr, name, node.attr_path)
    elif isinstance(node, Not):
        _check_filter(attr, name, node.expr)
    elif isinstance(node, LogicalExpr):
        for term in node.terms:
            _check_filter(attr, name, term)
    else:
        raise InvalidFilter(f'a filter on "{name}" cannot hold another value filter', field=name)


class _Match(FilterVisitor[bool]):
    """Whether one value (a JSON object) of a multi-valued attribute matches a
    checked filter; strings compare under their sub-attribute's caseExact."""

    def __init__(self, attr: Attr, item: Any) -> None:
        self.attr = attr
        self.item = item if isinstance(item, dict) else {}

    def _read(self, attr_path: AttrPath) -> tuple[Attr | None, Any]:
        sub = self.attr.sub(attr_path.attr)
        return sub, self.item.get(sub.name) if sub is not None else None

    def visit_comparison(self, node: Comparison) -> bool:
        sub, actual = self._read(node.attr_path)
        return sub is not None and _compare(sub, actual, node.op, node.value)

    def visit_present(self, node: Present) -> bool:
        _, actual = self._read(node.attr_path)
        return actual not in (None, "", [], {})

    def visit_not(self, node: Not) -> bool:
        return not self.visit(node.expr)

    def visit_logical_expr(self, node: LogicalExpr) -> bool:
        results = (self.visit(term) for term in node.terms)
        return all(results) if node.op == LogicalOperator.and_ else any(results)

    def visit_value_path(self, node: ValuePath) -> bool:
        return False


def _compare(sub: Attr, actual: Any, op: CompareOperator, expected: Any) -> bool:
    if sub.type == "boolean" and isinstance(expected, str) and expected.lower() in _BOOLEANS:
        expected = expected.lower() == "true"
    if actual is None or expected is None:
        if op == CompareOperator.eq:
            return actual is None and expected is None
        return op == CompareOperator.ne and (actual is None) != (expected is None)
    if isinstance(actual, str) and isinstance(expected, str):
        if not sub.case_exact:
            actual, expected = actual.casefold(), expected.casefold()
        left: str = actual
        right: str = expected
        if op == CompareOperator.co:
            return right in left
        if op == CompareOperator.sw:
            return left.startswith(right)
        if op == CompareOperator.ew:
            return left.endswith(right)
    elif op in (CompareOperator.co, CompareOperator.sw, CompareOperator.ew):
        return False
    comparable = (isinstance(actual, bool) == isinstance(expected, bool)) and (
        isinstance(actual, str) == isinstance(expected, str)
    )
    if op == CompareOperator.eq:
        return comparable and bool(actual == expected)
    if op == CompareOperator.ne:
        return not comparable or bool(actual != expected)
    if not comparable or isinstance(actual, bool):
        return False
    try:
        if op == CompareOperator.gt:
            return bool(actual > expected)
        if op == CompareOperator.ge:
            return bool(actual >= expected)
        if op == CompareOperator.lt:
            return bool(actual < expected)
        return bool(actual <= expected)
    except TypeError:
        return False


def _from_filter(attr: Attr, node: FilterNode) -> dict[str, Any] | None:
    """The value a filter of `eq` comparisons joined by `and` describes, as a new
    value to create when nothing matches; None for any other filter."""
    terms = node.terms if isinstance(node, LogicalExpr) else (node,)
    if isinstance(node, LogicalExpr) and node.op != LogicalOperator.and_:
        return None
    made: dict[str, Any] = {}
    for term in terms:
        if not isinstance(term, Comparison) or term.op != CompareOperator.eq:
            return None
        sub = attr.sub(term.attr_path.attr)
        if sub is None:
            return None
        try:
            value = documents.attribute_value(sub, term.value, sub.name)
        except CoreError:
            return None
        if value is ABSENT or made.get(sub.name, value) != value:
            return None
        made[sub.name] = value
    return made


def _member_filter_ids(node: FilterNode) -> list[str]:
    """The ids of `members[value eq "a" or value eq "b"]`."""
    if isinstance(node, LogicalExpr) and node.op == LogicalOperator.or_:
        return [i for term in node.terms for i in _member_filter_ids(term)]
    if (
        isinstance(node, Comparison)
        and node.op == CompareOperator.eq
        and node.attr_path.attr.lower() == "value"
        and node.attr_path.sub_attr is None
        and node.attr_path.uri is None
        and isinstance(node.value, str)
        and node.value
    ):
        documents.check_string(node.value, "members[value eq ...]")
        return [node.value]
    raise InvalidFilter(
        f'unsupported members filter [{node}]: only value eq "<id>", joined by or',
        field="members",
    )


def _unwrap(attr: Attr, value: Any) -> Any:
    """{"value": x} for a simple single-valued attribute means x: {"value": ""}
    clears it, as it clears the manager."""
    if attr.type == "complex" or attr.multi_valued or not isinstance(value, dict):
        return value
    if len(value) == 1:
        key, inner = next(iter(value.items()))
        if isinstance(key, str) and key.lower() == "value":
            return inner
    return value


def _one_primary(values: list[Any], written: list[Any]) -> None:
    """RFC 7644 §3.5.2: a value made primary makes the others not primary."""
    if not any(isinstance(w, dict) and w.get("primary") is True for w in written):
        return
    for item in values:
        primary = isinstance(item, dict) and item.get("primary") is True
        if primary and not any(item is w for w in written):
            item["primary"] = False


def _check_count(values: list[Any], name: str) -> None:
    if len(values) > MAX_VALUES:
        raise TooMany(
            f'"{name}" would have {len(values)} values; at most {MAX_VALUES} are allowed',
            field=name,
        )
