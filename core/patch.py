"""SCIM PATCH (RFC 7644 §3.5.2) applied to a stored document, as real identity
providers send it (see shared/reference/idp-scim-traffic.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.schema import ResourceSchema


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
    raise NotImplementedError
