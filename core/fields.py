"""The JSON text fields of the core's requests (user_json, group_json, a
PATCH operation's value_json), parsed with common.wirejson: InvalidArgument
naming the field for anything that is not JSON of the expected shape."""

from __future__ import annotations

from typing import Any

from common import wirejson
from core.errors import InvalidArgument


def loads(text: str, field: str) -> Any:
    """The JSON value of a text field; InvalidArgument naming `field` if it is
    not JSON (or nests too deeply to parse)."""
    try:
        return wirejson.parse(text)
    except (ValueError, RecursionError):
        raise InvalidArgument(f"{field} is not valid JSON", field=field) from None


def loads_object(text: str, field: str) -> dict[str, Any]:
    """The JSON object of a text field (a resource); InvalidArgument otherwise."""
    value = loads(text, field)
    if not isinstance(value, dict):
        raise InvalidArgument(f"{field} must be a JSON object", field=field)
    return value
