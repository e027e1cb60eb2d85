"""SCIM JSON ⇄ the JSON text fields of the core's protos (`resource_json`,
`user_json`, `group_json`, `value_json`), for the core and the gateway alike.

JSON text, not google.protobuf.Struct: both ends hold the document as Python
dicts, and json is about five times cheaper than building or reading a
Struct (which also turns every number into a double). Text from the wire is
checked to be JSON of the expected shape; anything else is InvalidArgument,
never an exception the caller did not expect.
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import InvalidArgument


def dumps(value: Any) -> str:
    """JSON text of a SCIM value, ASCII-only so that it is valid UTF-8 whatever
    the strings hold."""
    return json.dumps(value, separators=(",", ":"))


def loads(text: str, field: str) -> Any:
    """The JSON value of a text field; InvalidArgument naming `field` if it is
    not JSON (or nests too deeply to parse)."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise InvalidArgument(f"{field} is not valid JSON", field=field) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_object(text: str, field: str) -> dict[str, Any]:
    """The JSON object of a text field (a resource); InvalidArgument otherwise."""
    value = loads(text, field)
    if not isinstance(value, dict):
        raise InvalidArgument(f"{field} must be a JSON object", field=field)
    return value
