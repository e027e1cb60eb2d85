"""What a SCIM request asks for beyond its path: the list query (RFC 7644
§3.4.2: filter, startIndex, count, sortBy, sortOrder; RFC 9865: cursor) and the projection
(§3.9: attributes, excludedAttributes), from a query string or from a
SearchRequest body (§3.4.3).

Parameter names are matched without regard to case; unknown ones (such as
Entra's `aadOptscim062020`) are ignored. The filter itself is the core's to
parse: it travels as sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scim2_models import (
    InvalidCursorException,
    InvalidSyntaxException,
    InvalidValueException,
    TooManyException,
)

from common.wire import MAX_COUNT

MAX_INT32 = 2**31 - 1
# attributes / excludedAttributes: every listed resource is projected through
# every path, so their number and size bound the work of one request (a User
# has about 100 attribute and sub-attribute paths in all)
MAX_ATTRIBUTE_PATHS = 100
MAX_ATTRIBUTE_PATH_LENGTH = 512
SEARCH_REQUEST_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
# RFC 9865 §2: a cursor is made of RFC 3986 unreserved characters; ours are
# far shorter than this
_CURSOR = re.compile(r"[A-Za-z0-9._~-]{0,4096}")


@dataclass(frozen=True)
class Projection:
    """attributes / excludedAttributes, as lists of attribute paths."""

    attributes: tuple[str, ...] = ()
    excluded_attributes: tuple[str, ...] = ()

    def excludes(self, name: str, core_urn: str) -> bool:
        """Whether the top-level attribute `name` of the core schema is left out."""
        lowered = {name.lower(), f"{core_urn}:{name}".lower()}
        if any(path.lower() in lowered for path in self.excluded_attributes):
            return True
        if not self.attributes:
            return False
        return not any(_top(path.lower(), core_urn.lower()) in lowered for path in self.attributes)


def _top(path: str, core_urn: str) -> str:
    """The top-level attribute a lower-cased path names (sub-attribute dropped)."""
    if path.startswith(core_urn + ":"):
        return core_urn + ":" + path[len(core_urn) + 1 :].split(".", 1)[0]
    return path.split(".", 1)[0]


@dataclass(frozen=True)
class ListQuery:
    filter: str = ""
    start_index: int = 1
    count: int | None = None  # None: the core's default page size
    sort_by: str = ""
    sort_order: str = ""  # "", "ascending" or "descending"
    projection: Projection = field(default_factory=Projection)
    cursor: str | None = None  # None: index paging; "" the first page of cursor paging


def _lower_keys(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        out.setdefault(key.lower(), value)  # the first of repeated parameters wins
    return out


def _paths(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = [
            part
            for item in value
            for part in (item.split(",") if isinstance(item, str) else [item])
        ]
    else:
        raise InvalidValueException(detail=f"{name} must be a comma-separated list of attributes")
    if not all(isinstance(item, str) for item in items):
        raise InvalidValueException(detail=f"{name} must list attribute names as strings")
    paths = tuple(item.strip() for item in items if item.strip())
    if len(paths) > MAX_ATTRIBUTE_PATHS:
        raise TooManyException(
            detail=f"{name} lists {len(paths)} attributes;"
            f" at most {MAX_ATTRIBUTE_PATHS} are allowed"
        )
    for path in paths:
        if len(path) > MAX_ATTRIBUTE_PATH_LENGTH:
            raise InvalidValueException(
                detail=f"{name} holds an attribute path longer than"
                f" {MAX_ATTRIBUTE_PATH_LENGTH} characters: {path[:40]!r}…"
            )
    return paths


def _integer(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidValueException(detail=f"{name} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if digits.isdigit() and digits.isascii():
            # saturate absurd lengths rather than parse thousands of digits
            return int(text) if len(digits) <= 18 else (-1 if text[0] == "-" else 1) * 10**18
    raise InvalidValueException(detail=f"{name} must be an integer, got {value!r}")


def _string(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidValueException(detail=f"{name} must be a string")
    return value.strip()


def _sort_order(value: Any) -> str:
    text = _string("sortOrder", value).lower()
    if text not in ("", "ascending", "descending"):
        raise InvalidValueException(
            detail=f"sortOrder must be ascending or descending, got {text!r}"
        )
    return text


def _cursor(value: Any) -> str | None:
    """RFC 9865's `cursor`: absent for index paging, empty (`?cursor` or
    `?cursor=`) for the first page, else a cursor this server issued."""
    if value is None:
        return None
    if not isinstance(value, str) or not _CURSOR.fullmatch(value):
        raise InvalidCursorException(
            detail="cursor must be empty (the first page) or a nextCursor or previousCursor"
            " this server returned"
        )
    return value


def projection_from_params(params: Mapping[str, Any]) -> Projection:
    """attributes and excludedAttributes of a query string (or SearchRequest)."""
    lowered = _lower_keys(params)
    return Projection(
        attributes=_paths("attributes", lowered.get("attributes")),
        excluded_attributes=_paths("excludedAttributes", lowered.get("excludedattributes")),
    )


def list_query_from_params(params: Mapping[str, Any]) -> ListQuery:
    """A list query from query-string parameters or a SearchRequest's members.

    startIndex below 1 means 1, a negative count means 0 and counts above
    MAX_COUNT are capped (RFC 7644 §3.4.2.4); a value that is not an integer
    at all is a client error.
    """
    lowered = _lower_keys(params)
    start = _integer("startIndex", lowered.get("startindex"))
    count = _integer("count", lowered.get("count"))
    cursor = _cursor(lowered.get("cursor"))
    if cursor is not None and start is not None:
        raise InvalidValueException(
            detail="send startIndex (index paging) or cursor (cursor paging), not both"
        )
    return ListQuery(
        filter=_string("filter", lowered.get("filter")),
        start_index=min(max(start or 1, 1), MAX_INT32),
        count=None if count is None else min(max(count, 0), MAX_COUNT),
        sort_by=_string("sortBy", lowered.get("sortby")),
        sort_order=_sort_order(lowered.get("sortorder")),
        projection=projection_from_params(params),
        cursor=cursor,
    )


def list_query_from_search_request(body: Any) -> ListQuery:
    """A list query from a POST …/.search body (RFC 7644 §3.4.3)."""
    if not isinstance(body, dict):
        raise InvalidSyntaxException(detail="a SearchRequest must be a JSON object")
    schemas = body.get("schemas")
    if schemas is not None and (
        not isinstance(schemas, list)
        or SEARCH_REQUEST_URN.lower() not in {s.lower() for s in schemas if isinstance(s, str)}
    ):
        raise InvalidSyntaxException(detail=f"schemas must contain {SEARCH_REQUEST_URN}")
    return list_query_from_params(body)
