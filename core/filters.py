"""SCIM filters (RFC 7644 §3.4.2.2) and sortBy compiled to parameterised SQL.

The SQL is a boolean expression over one row aliased `r` of the resource's table
(users or groups). Values only ever travel as $n parameters (see Params).
"""

from __future__ import annotations

from typing import Any

from core.schema import ResourceSchema


class Params:
    """Collects query parameters; `add` returns the placeholder for a value."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def compile_filter(schema: ResourceSchema, text: str, params: Params) -> str:
    """The SQL condition for a SCIM filter. Raises core.errors.InvalidFilter."""
    raise NotImplementedError


def sort_expression(schema: ResourceSchema, sort_by: str) -> str:
    """The SQL expression to ORDER BY for a SCIM sortBy attribute.
    Raises core.errors.InvalidArgument for attributes that cannot be sorted on."""
    raise NotImplementedError
