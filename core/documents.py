"""SCIM JSON in → the document we store (validation and canonical form).

The stored document of a resource (column `attributes`, jsonb) is its SCIM
representation as the client sent it, in canonical form:

- known attribute and sub-attribute names in their canonical spelling
  (`USERNAME` → `userName`, `name.GivenName` → `name.givenName`);
- known extensions (the enterprise User extension) as an object under their
  canonical URN key; attributes under unknown schema URNs kept exactly as sent,
  under the URN key as sent;
- never stored: `schemas` (computed on output), `id`, `meta`, `groups` (computed
  from memberships), `members` (kept in group_members), `password` (accepted,
  never stored), and other readOnly attributes;
- values checked against their attribute type: strings are strings, booleans
  are booleans (Entra's "True"/"False" strings are accepted and converted),
  complex values are objects, multi-valued ones are lists; an error names the
  attribute and what was wrong.

Unassigned, null and empty are the same state (RFC 7644 §3.5.2): null, "", []
and an object whose sub-attributes are all empty leave the attribute out.
Unknown attributes (not under a URN) and unknown sub-attributes are ignored, so
that an identity provider's extra fields never fail a request.
"""

from __future__ import annotations

import enum
import math
from typing import Any

from core.errors import InvalidArgument, InvalidSyntax, TooMany
from core.schema import Attr, ResourceSchema

MAX_STRING_LENGTH = 4096
MAX_VALUES = 100  # values of one multi-valued attribute, keys or items of one unknown object
MAX_DEPTH = 8  # nesting of the values kept under an unknown schema URN
MAX_INTEGER = 2**63 - 1

_NEVER_STORED = frozenset({"password", "members", "groups"})
_STRING_TYPES = frozenset({"string", "reference", "binary", "dateTime"})


class Absent(enum.Enum):
    """The result of normalising a value that leaves its attribute unassigned."""

    ABSENT = enum.auto()


ABSENT = Absent.ABSENT


def normalize(schema: ResourceSchema, body: dict[str, Any]) -> dict[str, Any]:
    """Validate a whole resource body (POST or PUT) and return the stored document.

    Raises core.errors.InvalidArgument (or a subclass) naming the attribute at fault;
    a missing required attribute (userName, Group displayName) is an error.
    """
    if not isinstance(body, dict):
        raise InvalidSyntax(f"a {schema.name} must be a JSON object, not {json_type(body)}")
    document: dict[str, Any] = {}
    for key, value in body.items():
        _put(schema, document, key, value)
    for attr in schema.attrs.values():
        if attr.required and attr.name not in document:
            raise InvalidArgument(f'"{attr.name}" is required', field=attr.name)
    return document


def member_ids(body: dict[str, Any]) -> list[str] | None:
    """The `members[].value` ids of a Group body, in order, without duplicates;
    None when the body has no `members` key (so a PUT leaves members alone)."""
    if not isinstance(body, dict):
        raise InvalidSyntax(f"a Group must be a JSON object, not {json_type(body)}")
    found: Any = None
    for key, value in body.items():
        if isinstance(key, str) and key.lower() in ("members", _GROUP_MEMBERS):
            found = value
    if found is None or found == "":
        return None
    return member_values(found)


_GROUP_MEMBERS = "urn:ietf:params:scim:schemas:core:2.0:group:members"


def member_values(value: Any) -> list[str]:
    """The member ids in a `members` value: a list of {"value": id} objects (or
    one such object), in order, without duplicates."""
    items = value if isinstance(value, list) else [value]
    ids: dict[str, None] = {}
    for index, item in enumerate(items):
        member_id = _member_id(item)
        if not isinstance(member_id, str) or not member_id:
            raise InvalidArgument(
                f'members[{index}] must be an object with a non-empty string "value"',
                field="members",
            )
        check_string(member_id, f"members[{index}].value")
        ids[member_id] = None
    return list(ids)


def _member_id(item: Any) -> Any:
    if not isinstance(item, dict):
        return None
    for key, value in item.items():
        if isinstance(key, str) and key.lower() == "value":
            return value
    return None


def qualified_name(schema: ResourceSchema, attr: Attr) -> str:
    """`userName` for a core attribute, `urn:…:User:department` for an extension's."""
    if not attr.uri or attr.uri.lower() == schema.core_urn.lower():
        return attr.name
    return f"{attr.uri}:{attr.name}"


def is_stored(attr: Attr) -> bool:
    """Whether values of this top-level attribute belong in the stored document."""
    return attr.mutability != "readOnly" and attr.name not in _NEVER_STORED


def attribute_value(attr: Attr, value: Any, where: str) -> Any:
    """The canonical form of a value for `attr` (named `where` in errors), or ABSENT."""
    if value is None or value == "":
        return ABSENT
    if not attr.multi_valued:
        return _single_value(attr, value, where)
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_VALUES:
        raise TooMany(
            f'"{where}" has {len(items)} values; at most {MAX_VALUES} are allowed', field=where
        )
    values = []
    for index, item in enumerate(items):
        normalized = _single_value(attr, item, f"{where}[{index}]")
        if normalized is not ABSENT:
            values.append(normalized)
    if not values:
        return ABSENT
    check_primary(values, where)
    return values


def check_primary(values: list[Any], where: str) -> None:
    """At most one value of a multi-valued attribute may be primary (RFC 7643 §2.4)."""
    primaries = sum(1 for v in values if isinstance(v, dict) and v.get("primary") is True)
    if primaries > 1:
        raise InvalidArgument(
            f'at most one value of "{where}" may have "primary": true, not {primaries}',
            field=where,
        )


def _single_value(attr: Attr, value: Any, where: str) -> Any:
    if value is None or value == "":
        return ABSENT
    if attr.type != "complex":
        return _scalar(attr, value, where)
    if isinstance(value, str) and attr.sub("value") is not None:
        # Entra sends the manager as a bare id; {"value": id} is what it means
        value = {"value": value}
    if not isinstance(value, dict):
        raise InvalidArgument(f'"{where}" must be an object, not {json_type(value)}', field=where)
    result: dict[str, Any] = {}
    for key, item in value.items():
        sub = attr.sub(key) if isinstance(key, str) else None
        if sub is None or sub.mutability == "readOnly":
            continue
        if sub.name in result:
            raise InvalidArgument(f'"{where}.{sub.name}" is given more than once', field=where)
        normalized = attribute_value(sub, item, f"{where}.{sub.name}")
        if normalized is not ABSENT:
            result[sub.name] = normalized
    return result or ABSENT


def _scalar(attr: Attr, value: Any, where: str) -> Any:
    if attr.type in _STRING_TYPES:
        if not isinstance(value, str):
            raise InvalidArgument(
                f'"{where}" must be a string, not {json_type(value)}', field=where
            )
        check_string(value, where)
        return value
    if attr.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InvalidArgument(
            f'"{where}" must be a boolean (true or false), not {json_type(value)}', field=where
        )
    if attr.type == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INTEGER:
            return value
        raise InvalidArgument(f'"{where}" must be an integer', field=where)
    if attr.type == "decimal":
        if _is_number(value):
            return value
        raise InvalidArgument(f'"{where}" must be a number', field=where)
    raise InvalidArgument(f'"{where}" has the unsupported type {attr.type}', field=where)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= MAX_INTEGER
    return isinstance(value, float) and math.isfinite(value)


def check_string(value: str, where: str) -> None:
    """Strings are kept as sent, but must fit and be storable (jsonb has no NUL)."""
    if len(value) > MAX_STRING_LENGTH:
        raise InvalidArgument(
            f'"{where}" is longer than {MAX_STRING_LENGTH} characters', field=where
        )
    if "\x00" in value:
        raise InvalidArgument(f'"{where}" contains a NUL character', field=where)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument(f'"{where}" is not valid Unicode', field=where) from None


def unknown_value(value: Any, where: str, depth: int = 0) -> Any:
    """A JSON value under an unknown schema URN, kept as sent once checked to be
    storable: bounded in depth and size, strings as for known attributes."""
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            check_string(value, where)
        return value
    if isinstance(value, int | float):
        if not _is_number(value):
            raise InvalidArgument(f'"{where}" is not a storable number', field=where)
        return value
    if not isinstance(value, dict | list):
        raise InvalidArgument(f'"{where}" is not a JSON value', field=where)
    if depth >= MAX_DEPTH:
        raise InvalidArgument(
            f'"{where}" nests more than {MAX_DEPTH} levels of objects and lists', field=where
        )
    if len(value) > MAX_VALUES:
        raise TooMany(
            f'"{where}" has {len(value)} members; at most {MAX_VALUES} are allowed', field=where
        )
    if isinstance(value, list):
        return [unknown_value(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    result: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidSyntax(f'"{where}" has a key that is not a string', field=where)
        check_string(key, f"{where} key")
        result[key] = unknown_value(item, f"{where}.{key}", depth + 1)
    return result


def is_reserved_urn(urn: str) -> bool:
    """URNs of the SCIM standard's own core schemas and messages, which are never
    extensions (the standard's extension namespace stays open to custom schemas)."""
    return urn.lower().startswith(_RESERVED_URN_PREFIXES)


_RESERVED_URN_PREFIXES = ("urn:ietf:params:scim:schemas:core:", "urn:ietf:params:scim:api:")


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _put(schema: ResourceSchema, document: dict[str, Any], key: Any, value: Any) -> None:
    """Store one top-level key of a body into the document being built."""
    if not isinstance(key, str):
        raise InvalidSyntax("attribute names must be strings")
    lowered = key.lower()
    if not lowered.startswith("urn:"):
        _put_attr(schema, document, schema.attr(key), value)
        return
    extension = schema.extension_urn(key)
    if extension is not None or lowered == schema.core_urn.lower():
        # a whole schema's attributes as one object
        if value is None or value == "":
            return
        if not isinstance(value, dict):
            raise InvalidArgument(
                f'"{extension or schema.core_urn}" must be an object, not {json_type(value)}',
                field=key,
            )
        for name, item in value.items():
            if not isinstance(name, str):
                raise InvalidSyntax("attribute names must be strings")
            _put_attr(schema, document, schema.attr(name, extension), item)
        return
    urn, name = schema.split_urn_path(key)
    if urn is not None:
        # "urn:…:User:userName": one attribute qualified by its schema
        _put_attr(schema, document, schema.attr(name, urn), value)
        return
    if value is None or is_reserved_urn(key):
        return
    if not isinstance(value, dict):
        raise InvalidArgument(
            f'"{key}" must be an object (the attributes of that schema), not {json_type(value)}',
            field=key,
        )
    check_string(key, "a schema URN")
    if any(existing.lower() == lowered for existing in document):
        raise InvalidArgument(f'"{key}" is given more than once', field=key)
    document[key] = unknown_value(value, key)


def _put_attr(
    schema: ResourceSchema, document: dict[str, Any], attr: Attr | None, value: Any
) -> None:
    if attr is None or not is_stored(attr):
        return
    name = qualified_name(schema, attr)
    normalized = attribute_value(attr, value, name)
    if attr.required and isinstance(normalized, str) and not normalized.strip():
        raise InvalidArgument(f'"{name}" must not be blank', field=name)
    if normalized is ABSENT:
        return
    container = document if name == attr.name else document.setdefault(attr.uri, {})
    if attr.name in container:
        raise InvalidArgument(f'"{name}" is given more than once', field=name)
    container[attr.name] = normalized
