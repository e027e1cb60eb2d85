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
"""

from __future__ import annotations

from typing import Any

from core.schema import ResourceSchema


def normalize(schema: ResourceSchema, body: dict[str, Any]) -> dict[str, Any]:
    """Validate a whole resource body (POST or PUT) and return the stored document.

    Raises core.errors.InvalidArgument (or a subclass) naming the attribute at fault;
    a missing required attribute (userName, Group displayName) is an error.
    """
    raise NotImplementedError


def member_ids(body: dict[str, Any]) -> list[str] | None:
    """The `members[].value` ids of a Group body, in order, without duplicates;
    None when the body has no `members` key (so a PUT leaves members alone)."""
    raise NotImplementedError
