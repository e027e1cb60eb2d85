"""The SCIM schemas the core serves, as lookup tables.

Attribute definitions come from scim2-models (RFC 7643 User, Group and the
enterprise extension), plus the common attributes every resource has (id,
externalId, meta). Names are matched without regard to case, as RFC 7644
§3.4.2.2 requires; `canonical` spelling is what we store and return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from scim2_models import EnterpriseUser, Group, User

from common.wire import GROUP_URN, USER_URN

ENTERPRISE_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@dataclass(frozen=True)
class Attr:
    """One attribute or sub-attribute definition (RFC 7643 §7)."""

    name: str  # canonical spelling
    type: str  # string, boolean, decimal, integer, dateTime, reference, binary, complex
    multi_valued: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"  # readWrite, readOnly, writeOnly, immutable
    required: bool = False
    uri: str = ""  # the schema URN the attribute belongs to
    sub_attrs: dict[str, Attr] = field(default_factory=dict)  # by lower-case name

    def sub(self, name: str) -> Attr | None:
        return self.sub_attrs.get(name.lower())


@dataclass(frozen=True)
class ResourceSchema:
    """A resource type: its core schema, known extensions and their attributes."""

    name: str  # "User" or "Group"
    endpoint: str  # "/Users"
    core_urn: str
    attrs: dict[str, Attr]  # core and common attributes, by lower-case name
    extensions: dict[str, dict[str, Attr]]  # by lower-case URN, then lower-case name
    extension_urns: dict[str, str]  # lower-case URN -> canonical URN

    def attr(self, name: str, uri: str | None = None) -> Attr | None:
        """The top-level attribute `name`, optionally qualified by a schema URN."""
        if uri is None or uri.lower() == self.core_urn.lower():
            return self.attrs.get(name.lower())
        return self.extensions.get(uri.lower(), {}).get(name.lower())

    def extension_urn(self, urn: str) -> str | None:
        """The canonical spelling of a known extension URN, or None."""
        return self.extension_urns.get(urn.lower())

    def split_urn_path(self, path: str) -> tuple[str | None, str]:
        """Split "urn:…:User:department.x" into (canonical URN, "department.x") when
        the path starts with the core or a known extension URN; else (None, path)."""
        lowered = path.lower()
        for urn in (self.core_urn, *self.extension_urns.values()):
            if lowered.startswith(urn.lower() + ":"):
                return urn, path[len(urn) + 1 :]
        return None, path


def _from_model(schema: dict[str, Any], uri: str) -> dict[str, Attr]:
    out: dict[str, Attr] = {}
    for raw in schema["attributes"]:
        attr = _attr(raw, uri)
        out[attr.name.lower()] = attr
    return out


def _attr(raw: dict[str, Any], uri: str) -> Attr:
    return Attr(
        name=raw["name"],
        type=str(raw.get("type") or "string"),
        multi_valued=bool(raw.get("multiValued")),
        case_exact=bool(raw.get("caseExact")),
        mutability=str(raw.get("mutability") or "readWrite"),
        required=bool(raw.get("required")),
        uri=uri,
        sub_attrs={s["name"].lower(): _attr(s, uri) for s in raw.get("subAttributes") or []},
    )


def _common(uri: str) -> dict[str, Attr]:
    meta_subs = {
        "resourcetype": Attr("resourceType", "string", case_exact=True, mutability="readOnly"),
        "created": Attr("created", "dateTime", mutability="readOnly"),
        "lastmodified": Attr("lastModified", "dateTime", mutability="readOnly"),
        "location": Attr("location", "reference", case_exact=True, mutability="readOnly"),
        "version": Attr("version", "string", case_exact=True, mutability="readOnly"),
    }
    return {
        "id": Attr("id", "string", case_exact=True, mutability="readOnly", uri=uri),
        "externalid": Attr("externalId", "string", case_exact=True, uri=uri),
        "meta": Attr("meta", "complex", mutability="readOnly", uri=uri, sub_attrs=meta_subs),
    }


def _dump(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.to_schema().model_dump()
    return dumped


@cache
def user_schema() -> ResourceSchema:
    attrs = _common(USER_URN) | _from_model(_dump(User), USER_URN)
    # RFC 7643 §4.1.1: userName is unique and compared without regard to case
    attrs["username"] = Attr("userName", "string", required=True, uri=USER_URN)
    enterprise = _from_model(_dump(EnterpriseUser), ENTERPRISE_URN)
    return ResourceSchema(
        name="User",
        endpoint="/Users",
        core_urn=USER_URN,
        attrs=attrs,
        extensions={ENTERPRISE_URN.lower(): enterprise},
        extension_urns={ENTERPRISE_URN.lower(): ENTERPRISE_URN},
    )


@cache
def group_schema() -> ResourceSchema:
    attrs = _common(GROUP_URN) | _from_model(_dump(Group), GROUP_URN)
    attrs["displayname"] = Attr("displayName", "string", required=True, uri=GROUP_URN)
    return ResourceSchema(
        name="Group",
        endpoint="/Groups",
        core_urn=GROUP_URN,
        attrs=attrs,
        extensions={},
        extension_urns={},
    )
