"""core.patch: RFC 7644 §3.5.2 PATCH as Okta, Entra (both dialects) and the
Microsoft SCIM Validator send it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.wire import USER_URN
from core import documents, patch
from core.errors import (
    CoreError,
    InvalidArgument,
    InvalidFilter,
    InvalidPath,
    Mutability,
    NoTarget,
    TooMany,
)
from core.patch import MemberChanges, Operation, PatchResult
from core.schema import ENTERPRISE_URN, group_schema, user_schema

SAMPLES = Path(__file__).parent / "samples"
USER = user_schema()
GROUP = group_schema()
MANAGER = f"{ENTERPRISE_URN}:manager"
EMPLOYEE_NUMBER = f"{ENTERPRISE_URN}:employeeNumber"

_MISSING = object()


def op(name: str, path: str = "", value: Any = _MISSING) -> Operation:
    if value is _MISSING:
        return Operation(op=name, path=path, value=None, has_value=False)
    return Operation(op=name, path=path, value=value, has_value=True)


def from_request(body: dict[str, Any]) -> list[Operation]:
    """The operations of a PatchOp request body, as the gateway hands them over."""
    return [
        Operation(op=o["op"], path=o.get("path", ""), value=o.get("value"), has_value="value" in o)
        for o in body["Operations"]
    ]


def base_user() -> dict[str, Any]:
    return documents.normalize(
        USER,
        {
            "userName": "bjensen@example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "displayName": "Babs Jensen",
            "active": True,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": True},
                {"value": "babs@jensen.org", "type": "home"},
            ],
            "phoneNumbers": [{"value": "555-555-5555", "type": "work"}],
            ENTERPRISE_URN: {"employeeNumber": "701984", "department": "Tour Operations"},
        },
    )


def base_group() -> dict[str, Any]:
    return documents.normalize(GROUP, {"displayName": "Tour Guides", "externalId": "ext-1"})


def patch_user(*operations: Operation, document: dict[str, Any] | None = None) -> PatchResult:
    return patch.apply(USER, base_user() if document is None else document, list(operations))


def patch_group(*operations: Operation) -> PatchResult:
    return patch.apply(GROUP, base_group(), list(operations))


# ---- Okta (OIN apps and the SCIM 2.0 test app templates)


def test_okta_deactivate_path_less_replace() -> None:
    result = patch_user(op("replace", value={"active": False}))
    expected = base_user() | {"active": False}
    assert result.document == expected  # nothing else wiped (ssoready#206)
    assert result.changed == ["active"]
    assert result.members.empty


def test_okta_reactivate_path_less_replace() -> None:
    document = base_user() | {"active": False}
    assert patch_user(op("replace", value={"active": True}), document=document).document["active"]


def test_okta_group_rename_ignores_id_and_leaves_members_alone() -> None:
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"id": "g-1", "displayName": "New name"}}],
    }
    result = patch.apply(GROUP, base_group(), from_request(body))
    assert result.document == {"displayName": "New name", "externalId": "ext-1"}
    assert result.members.empty  # langwatch#7131: a rename must not empty the group
    assert result.changed == ["displayName"]


def test_okta_member_remove_by_filter_then_add() -> None:
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "remove", "path": 'members[value eq "u-9"]'},
            {
                "op": "add",
                "path": "members",
                "value": [{"value": "u-1", "display": "test.user@okta.local"}],
            },
        ],
    }
    result = patch.apply(GROUP, base_group(), from_request(body))
    assert result.members == MemberChanges(replace=None, add={"u-1"}, remove={"u-9"})
    assert result.document == base_group()
    assert result.changed == ["members"]


def test_okta_several_removes_then_one_add_of_several() -> None:
    result = patch_group(
        op("remove", 'members[value eq "u-1"]'),
        op("remove", 'members[value eq "u-2"]'),
        op("add", "members", [{"value": "u-3", "display": "c"}, {"value": "u-4", "display": "d"}]),
    )
    assert result.members == MemberChanges(add={"u-3", "u-4"}, remove={"u-1", "u-2"})


def test_okta_push_now_replace_members() -> None:
    result = patch_group(op("replace", "members", [{"value": "u-1"}, {"value": "u-2"}]))
    assert result.members == MemberChanges(replace=["u-1", "u-2"])


def test_okta_push_now_of_an_empty_group_empties_it() -> None:
    # Captain-P-Goldfish/SCIM-SDK#757: `replace members []` must not be a 400
    result = patch_group(op("replace", "members", []))
    assert result.members.replace == []
    assert not result.members.empty


def test_okta_password_sync_is_accepted_and_never_stored() -> None:
    result = patch_user(
        op("replace", value={"password": "hunter22", "active": True}),
        op("replace", "password", "hunter22"),
    )
    assert "hunter22" not in json.dumps(result.document)
    assert "password" not in result.changed


# ---- RFC 7644 §3.5.2 examples (scim2-models samples)


def test_rfc_remove_and_add_one_member() -> None:
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "remove", "path": 'members[value eq"2819c223-7f76-453a-919d-413861904646"]'},
            {
                "op": "add",
                "path": "members",
                "value": [
                    {
                        "display": "James Smith",
                        "$ref": "https://example.com/v2/Users/08e1d05d-121c-4561-8b96-473d93df9210",
                        "value": "08e1d05d-121c-4561-8b96-473d93df9210",
                    }
                ],
            },
        ],
    }
    result = patch.apply(GROUP, base_group(), from_request(body))
    assert result.members == MemberChanges(
        add={"08e1d05d-121c-4561-8b96-473d93df9210"},
        remove={"2819c223-7f76-453a-919d-413861904646"},
    )


def test_rfc_replace_all_members_by_remove_then_add() -> None:
    result = patch_group(
        op("remove", "members"),
        op("add", "members", [{"value": "a", "display": "A"}, {"value": "b", "display": "B"}]),
    )
    assert result.members == MemberChanges(replace=["a", "b"])


# ---- Entra default dialect


@pytest.mark.parametrize(
    ("name", "value", "active"),
    [
        ("Replace", "False", False),
        ("Replace", "false", False),
        ("Replace", False, False),
        ("Add", "False", False),  # rancher#54025
        ("Replace", "True", True),
    ],
)
def test_entra_active_forms(name: str, value: Any, active: bool) -> None:
    document = base_user() | {"active": not active}
    result = patch_user(op(name, "active", value), document=document)
    assert result.document["active"] is active
    assert result.changed == ["active"]


def test_entra_default_user_update() -> None:
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {
                "op": "Replace",
                "path": 'emails[type eq "work"].value',
                "value": "updatedEmail@microsoft.com",
            },
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
            {"op": "Replace", "path": EMPLOYEE_NUMBER, "value": "Eqpj"},
            {"op": "Add", "path": "nickName", "value": "Babs"},
        ],
    }
    result = patch.apply(USER, base_user(), from_request(body))
    document = result.document
    assert document["emails"][0] == {
        "value": "updatedEmail@microsoft.com",
        "type": "work",
        "primary": True,
    }
    assert document["emails"][1] == {"value": "babs@jensen.org", "type": "home"}
    assert document["name"] == {"givenName": "Barbara", "familyName": "updatedFamilyName"}
    assert document[ENTERPRISE_URN]["employeeNumber"] == "Eqpj"
    assert document[ENTERPRISE_URN]["department"] == "Tour Operations"
    assert document["nickName"] == "Babs"
    assert result.changed == ["emails", "name", "nickName", EMPLOYEE_NUMBER]


def test_entra_filter_matching_nothing_creates_the_value() -> None:
    result = patch_user(
        op("Replace", 'phoneNumbers[type eq "mobile"].value', "555-0100"),
        op("Add", 'addresses[type eq "work"].streetAddress', "1 Main St"),
        op("Replace", 'addresses[type eq "work"].postalCode', "91608"),
    )
    assert result.document["phoneNumbers"] == [
        {"value": "555-555-5555", "type": "work"},
        {"type": "mobile", "value": "555-0100"},
    ]
    assert result.document["addresses"] == [
        {"type": "work", "streetAddress": "1 Main St", "postalCode": "91608"}
    ]


def test_entra_filter_with_and_of_eq_creates_the_value() -> None:
    result = patch_user(op("Replace", 'ims[type eq "aim" and display eq "x"].value', "handle"))
    assert result.document["ims"] == [{"type": "aim", "display": "x", "value": "handle"}]


def test_entra_manager_add_replace_remove() -> None:
    added = patch_user(op("Add", MANAGER, "m-1"))
    assert added.document[ENTERPRISE_URN]["manager"] == {"value": "m-1"}
    assert added.changed == [MANAGER]
    replaced = patch_user(op("Replace", MANAGER, {"value": "m-2"}), document=added.document)
    assert replaced.document[ENTERPRISE_URN]["manager"] == {"value": "m-2"}
    for removal in ("", {"value": ""}, None):
        removed = patch_user(op("Replace", MANAGER, removal), document=replaced.document)
        assert "manager" not in removed.document[ENTERPRISE_URN]
        assert removed.changed == [MANAGER]
    removed = patch_user(op("Remove", MANAGER), document=replaced.document)
    assert "manager" not in removed.document[ENTERPRISE_URN]


def test_manager_value_change_drops_the_old_ref() -> None:
    document = base_user()
    document[ENTERPRISE_URN]["manager"] = {"value": "m-1", "$ref": "../Users/m-1"}
    result = patch_user(op("replace", MANAGER, "m-2"), document=document)
    assert result.document[ENTERPRISE_URN]["manager"] == {"value": "m-2"}


def test_clearing_the_last_extension_attribute_drops_the_extension() -> None:
    document = documents.normalize(USER, {"userName": "a", ENTERPRISE_URN: {"manager": "m"}})
    result = patch_user(op("Replace", MANAGER, ""), document=document)
    assert result.document == {"userName": "a"}


@pytest.mark.parametrize("clear", [None, "", {"value": ""}])
def test_replace_with_empty_clears_a_single_valued_attribute(clear: Any) -> None:
    result = patch_user(op("replace", "displayName", clear), op("add", "name", clear))
    assert "displayName" not in result.document
    assert "name" not in result.document


def test_entra_group_rename() -> None:
    result = patch_group(op("Replace", "displayName", "newName"))
    assert result.document["displayName"] == "newName"
    assert result.members.empty


def test_entra_add_several_members() -> None:
    result = patch_group(
        op("Add", "members", [{"$ref": None, "value": "u-1"}, {"$ref": None, "value": "u-2"}])
    )
    assert result.members == MemberChanges(add={"u-1", "u-2"})
    assert result.changed == ["members"]


def test_entra_remove_members_with_a_value_array_removes_every_one() -> None:
    # Sentry's teams.py reads only value[0]; every listed member must go
    result = patch_group(
        op(
            "Remove",
            "members",
            [{"$ref": None, "value": "u-1"}, {"value": "u-2"}, {"value": "u-3"}],
        )
    )
    assert result.members == MemberChanges(remove={"u-1", "u-2", "u-3"})


# ---- Entra aadOptscim062020 dialect (and the validator)


def test_entra_flag_path_less_replace_with_dotted_and_urn_keys() -> None:
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {
                "op": "replace",
                "path": 'emails[type eq "work"].value',
                "value": "TestMhvaes@test.microsoft.com",
            },
            {
                "op": "replace",
                "value": {
                    "displayName": "Bjfe",
                    "name.givenName": "Kkom",
                    "name.familyName": "Unua",
                    EMPLOYEE_NUMBER: "Aklq",
                },
            },
        ],
    }
    result = patch.apply(USER, base_user(), from_request(body))
    document = result.document
    assert document["emails"][0]["value"] == "TestMhvaes@test.microsoft.com"
    assert document["displayName"] == "Bjfe"
    assert document["name"] == {"givenName": "Kkom", "familyName": "Unua"}
    assert document[ENTERPRISE_URN] == {"employeeNumber": "Aklq", "department": "Tour Operations"}
    assert "name.givenName" not in document
    assert result.changed == ["displayName", "emails", "name", EMPLOYEE_NUMBER]


def test_entra_flag_boolean_active_and_filter_remove() -> None:
    user = patch_user(op("replace", "active", False))
    assert user.document["active"] is False
    group = patch_group(op("remove", 'members[value eq "7f4bc1a3-0000"]'))
    assert group.members == MemberChanges(remove={"7f4bc1a3-0000"})


def test_validator_p1_multiple_ops_on_different_attributes() -> None:
    result = patch_user(
        op("replace", "userName", "new.name@example.com"),
        op("replace", "displayName", "New Name"),
        op("add", "title", "Captain"),
        op("replace", "active", "False"),
        op("remove", "phoneNumbers"),
    )
    document = result.document
    assert document["userName"] == "new.name@example.com"
    assert document["displayName"] == "New Name"
    assert document["title"] == "Captain"
    assert document["active"] is False
    assert "phoneNumbers" not in document
    assert result.changed == ["active", "displayName", "phoneNumbers", "title", "userName"]


def test_validator_p5_add_then_remove_same_member_is_net_removed() -> None:
    result = patch_group(
        op("add", "members", [{"value": "u-1"}]), op("remove", 'members[value eq "u-1"]')
    )
    assert result.members == MemberChanges(remove={"u-1"})


def test_remove_then_add_same_member_is_net_added() -> None:
    result = patch_group(
        op("Remove", "members", [{"value": "u-1"}]), op("Add", "members", [{"value": "u-1"}])
    )
    assert result.members == MemberChanges(add={"u-1"})


def test_member_changes_after_a_replace_apply_to_the_list() -> None:
    result = patch_group(
        op("replace", "members", [{"value": "a"}, {"value": "b"}]),
        op("add", "members", {"value": "c"}),
        op("remove", 'members[value eq "a" or value eq "x"]'),
    )
    assert result.members == MemberChanges(replace=["b", "c"])


def test_members_filter_with_or() -> None:
    result = patch_group(op("remove", 'members[value eq "a" or value eq "b" or value eq "c"]'))
    assert result.members.remove == {"a", "b", "c"}


def test_validator_group_path_less_replace_of_attributes() -> None:
    result = patch_group(op("replace", value={"externalId": "ext-2", "displayName": "G2"}))
    assert result.document == {"displayName": "G2", "externalId": "ext-2"}
    assert result.changed == ["displayName", "externalId"]


def test_path_less_members_is_a_members_operation() -> None:
    result = patch_group(op("replace", value={"displayName": "G", "members": [{"value": "u-1"}]}))
    assert result.members == MemberChanges(replace=["u-1"])
    assert result.document["displayName"] == "G"
    assert result.changed == ["displayName", "members"]
    added = patch_group(op("add", value={"members": [{"value": "u-2"}]}))
    assert added.members == MemberChanges(add={"u-2"})


def test_remove_members_without_value_removes_all() -> None:
    assert patch_group(op("remove", "members")).members == MemberChanges(replace=[])


# ---- RFC semantics


def test_add_to_multi_valued_appends_and_skips_duplicates() -> None:
    new = {"value": "new@example.com", "type": "other"}
    result = patch_user(op("add", "emails", [new, base_user()["emails"][1]]))
    assert result.document["emails"] == [*base_user()["emails"], new]
    single = patch_user(op("add", "emails", new))  # a single object
    assert single.document["emails"] == [*base_user()["emails"], new]


def test_add_of_a_primary_value_makes_the_others_not_primary() -> None:
    result = patch_user(op("add", "emails", {"value": "n@x", "primary": "True"}))
    primaries = [e["value"] for e in result.document["emails"] if e.get("primary")]
    assert primaries == ["n@x"]


def test_add_on_single_valued_is_replace() -> None:
    assert patch_user(op("add", "displayName", "B")).document["displayName"] == "B"


def test_replace_multi_valued_without_filter_replaces_the_list() -> None:
    result = patch_user(op("replace", "emails", [{"value": "only@example.com"}]))
    assert result.document["emails"] == [{"value": "only@example.com"}]


def test_replace_with_value_filter_replaces_matching_values() -> None:
    result = patch_user(
        op("replace", 'emails[type eq "home"]', {"value": "new@home.org", "type": "home"})
    )
    assert result.document["emails"][1] == {"value": "new@home.org", "type": "home"}
    assert result.document["emails"][0] == base_user()["emails"][0]


def test_filters_compare_case_insensitively_unless_case_exact() -> None:
    result = patch_user(op("replace", 'EMAILS[TYPE eq "HOME"].VALUE', "x@y"))
    assert result.document["emails"][1] == {"value": "x@y", "type": "home"}


def test_filter_on_booleans_and_other_operators() -> None:
    result = patch_user(op("replace", "emails[primary eq true].display", "main"))
    assert result.document["emails"][0]["display"] == "main"
    result = patch_user(op("remove", 'emails[value sw "babs" or not (type pr)]'))
    assert [e["type"] for e in result.document["emails"]] == ["work"]


def test_remove_with_filter_removes_matching_values_or_their_sub_attribute() -> None:
    result = patch_user(op("remove", 'emails[type eq "home"]'))
    assert result.document["emails"] == [base_user()["emails"][0]]
    result = patch_user(op("remove", 'emails[type eq "work"].primary'))
    assert result.document["emails"][0] == {"value": "bjensen@example.com", "type": "work"}


def test_remove_with_filter_matching_nothing_is_a_no_op() -> None:
    assert patch_user(op("remove", 'emails[type eq "other"]')).document == base_user()


def test_remove_of_a_whole_attribute() -> None:
    result = patch_user(op("remove", "emails"), op("remove", "name.givenName"))
    assert "emails" not in result.document
    assert result.document["name"] == {"familyName": "Jensen"}


def test_replace_of_a_complex_attribute_keeps_other_sub_attributes() -> None:
    result = patch_user(op("replace", "name", {"givenName": "Babs"}))
    assert result.document["name"] == {"givenName": "Babs", "familyName": "Jensen"}


def test_whole_enterprise_extension_path() -> None:
    result = patch_user(op("replace", ENTERPRISE_URN, {"department": "Sales", "manager": "m"}))
    assert result.document[ENTERPRISE_URN] == {
        "employeeNumber": "701984",
        "department": "Sales",
        "manager": {"value": "m"},
    }
    removed = patch_user(op("remove", ENTERPRISE_URN))
    assert ENTERPRISE_URN not in removed.document


def test_core_urn_qualified_paths() -> None:
    result = patch_user(op("replace", f"{USER_URN}:displayName", "Q"))
    assert result.document["displayName"] == "Q"
    assert result.changed == ["displayName"]


def test_path_less_ignores_read_only_unknown_and_schemas() -> None:
    result = patch_user(
        op(
            "replace",
            value={
                "schemas": [USER_URN],
                "meta": {"created": "x"},
                "groups": [],
                "favouriteColour": "blue",
                "title": "T",
            },
        )
    )
    assert result.document == base_user() | {"title": "T"}
    assert result.changed == ["title"]


def test_the_input_document_is_not_modified() -> None:
    document = base_user()
    before = copy.deepcopy(document)
    patch_user(op("remove", "emails"), op("replace", "name.givenName", "X"), document=document)
    assert document == before
    with pytest.raises(InvalidPath):
        patch_user(op("remove", "emails"), op("replace", "bogus", "X"), document=document)
    assert document == before


# ---- attributes under unknown schema URNs: stored as sent


CUSTOM = "urn:ietf:params:scim:schemas:extension:CustomExt:2.0:User"


def test_unknown_urn_attribute_add_replace_remove() -> None:
    created = patch_user(op("Add", f"{CUSTOM}:costCode", "A1"))
    assert created.document[CUSTOM] == {"costCode": "A1"}
    assert created.changed == [f"{CUSTOM}:costCode"]
    replaced = patch_user(op("replace", f"{CUSTOM}:COSTCODE", "B2"), document=created.document)
    assert replaced.document[CUSTOM] == {"costCode": "B2"}
    removed = patch_user(op("remove", f"{CUSTOM}:costCode"), document=replaced.document)
    assert CUSTOM not in removed.document


def test_unknown_urn_whole_object_in_a_path_less_value() -> None:
    result = patch_user(op("add", value={CUSTOM: {"a": 1}, "urn:acme:ext:1.0:thing": {"b": [2]}}))
    assert result.document[CUSTOM] == {"a": 1}
    assert result.document["urn:acme:ext:1.0:thing"] == {"b": [2]}


def test_unknown_urn_whole_object_by_path() -> None:
    result = patch_user(op("add", CUSTOM, {"a": {"b": "c"}}))
    assert result.document[CUSTOM] == {"a": {"b": "c"}}
    result = patch_user(op("replace", f"{CUSTOM}:a.b", "d"), document=result.document)
    assert result.document[CUSTOM] == {"a": {"b": "d"}}
    result = patch_user(op("remove", CUSTOM), document=result.document)
    assert CUSTOM not in result.document


def test_core_urn_object_in_a_path_less_value() -> None:
    result = patch_user(op("replace", value={USER_URN: {"title": "T"}}))
    assert result.document["title"] == "T"
    nested: Any = {"title": "T"}
    for _ in range(3000):
        nested = {USER_URN: nested}
    with pytest.raises(InvalidArgument, match="cannot be nested in itself"):
        patch_user(op("replace", value=nested))
    with pytest.raises(InvalidArgument, match="cannot be nested in itself"):
        patch_user(op("replace", USER_URN, nested))


def test_standard_urns_are_never_taken_for_unknown_extensions() -> None:
    group_urn = "urn:ietf:params:scim:schemas:core:2.0:Group"
    with pytest.raises(InvalidPath, match=f'unknown attribute "{group_urn}"'):
        patch_user(op("add", group_urn, {"displayName": "x"}))
    assert patch_user(op("add", value={group_urn: {"displayName": "x"}})).document == base_user()


def test_making_a_value_primary_through_a_filter() -> None:
    result = patch_user(op("replace", 'emails[type eq "home"].primary', "True"))
    assert [e.get("primary") for e in result.document["emails"]] == [False, True]


# ---- errors


def test_op_names_in_any_case() -> None:
    for name in ("add", "Add", "ADD", "replace", "Replace", "REPLACE"):
        assert patch_user(op(name, "title", name)).document["title"] == name
    for name in ("remove", "Remove", "REMOVE"):
        assert "title" not in patch_user(op(name, "title")).document


@pytest.mark.parametrize("name", ["move", "copy", "", "test"])
def test_unknown_op(name: str) -> None:
    with pytest.raises(InvalidArgument, match=f'operation 1 .*unknown operation "{name}"'):
        patch_user(op(name, "title", "x"))


def test_remove_without_path_is_no_target() -> None:
    with pytest.raises(NoTarget, match=r'operation 1 \(remove\): "remove" needs a path'):
        patch_user(op("remove"))
    with pytest.raises(NoTarget):
        patch_user(op("remove", "", {"title": "x"}))


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("id", "id"),
        ("meta", "meta"),
        ("meta.created", "meta"),
        ("groups", "groups"),
        (f"{MANAGER}.displayName", f"{MANAGER}.displayName"),
    ],
)
def test_read_only_paths_are_mutability_errors(path: str, name: str) -> None:
    with pytest.raises(Mutability, match=f'"{name}" is read-only'):
        patch_user(op("replace", path, "x"))


def test_group_read_only_paths() -> None:
    with pytest.raises(Mutability, match='"id" is read-only'):
        patch_group(op("replace", "id", "x"))


@pytest.mark.parametrize(
    "path", ["emails[type eq", "x y", "name.givenName.x", "a[b eq 1e999]", "urn:x"]
)
def test_bad_path_syntax(path: str) -> None:
    with pytest.raises(InvalidPath, match=r"operation 1 .*invalid path"):
        patch_user(op("replace", path, "x"))


def test_unknown_attribute_paths() -> None:
    with pytest.raises(InvalidPath, match='unknown attribute "favouriteColour"'):
        patch_user(op("replace", "favouriteColour", "x"))
    with pytest.raises(InvalidPath, match=f'unknown attribute "{ENTERPRISE_URN}:shoeSize"'):
        patch_user(op("replace", f"{ENTERPRISE_URN}:shoeSize", "x"))
    with pytest.raises(InvalidPath, match='unknown attribute "members"'):
        patch_user(op("add", "members", [{"value": "u"}]))  # a User has no members


def test_unknown_sub_attribute_message_names_operation_and_path() -> None:
    with pytest.raises(InvalidPath) as raised:
        patch_user(op("replace", "title", "x"), op("replace", 'emails[type eq "work"].vlue', "y"))
    assert raised.value.message == (
        'operation 2 (replace "emails[type eq \\"work\\"].vlue"): '
        'unknown sub-attribute "vlue" of "emails"'
    )


@pytest.mark.parametrize(
    "path",
    [
        'emails[type ne "work"].value',
        'emails[type eq "other" or type eq "x"].value',
        'emails[type eq "a" and type eq "b"].value',
        'emails[value pr and type eq "other"].display',
    ],
)
def test_replace_with_filter_matching_nothing_that_cannot_create_is_no_target(path: str) -> None:
    document = documents.normalize(
        USER, {"userName": "u", "emails": [{"value": "a", "type": "work"}]}
    )
    with pytest.raises(NoTarget, match=r'operation 1 .*no value of "emails" matches \['):
        patch_user(op("replace", path, "x"), document=document)


def test_filter_errors() -> None:
    with pytest.raises(InvalidFilter, match='unknown sub-attribute "colour" of "emails"'):
        patch_user(op("replace", 'emails[colour eq "red"].value', "x"))
    with pytest.raises(InvalidFilter, match='"name" is not a multi-valued'):
        patch_user(op("replace", 'name[givenName eq "x"].familyName', "x"))
    with pytest.raises(InvalidFilter, match="boolean"):
        patch_user(op("remove", "emails[primary gt true]"))


@pytest.mark.parametrize(
    "path",
    [
        'members[display eq "Bob"]',
        'members[value ne "u-1"]',
        'members[value eq "a" and value eq "b"]',
        "members[value pr]",
    ],
)
def test_unsupported_members_filters(path: str) -> None:
    with pytest.raises(InvalidFilter, match="unsupported members filter"):
        patch_group(op("remove", path))


def test_members_filter_is_for_remove_only() -> None:
    with pytest.raises(InvalidPath, match="supports only remove"):
        patch_group(op("add", 'members[value eq "u-1"]', {"value": "u-1"}))
    with pytest.raises(InvalidPath):
        patch_group(op("replace", 'members[value eq "u-1"].display', "x"))


@pytest.mark.parametrize("members", [[{"value": ""}], [{"display": "x"}], [{"value": 7}], ["u-1"]])
def test_member_values_must_be_non_empty_strings(members: Any) -> None:
    with pytest.raises(InvalidArgument, match=r"members\[0\] must be an object"):
        patch_group(op("add", "members", members))


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (op("replace", "active", "yes"), '"active" must be a boolean'),
        (op("replace", "displayName", 5), '"displayName" must be a string'),
        (op("add", "emails", ["x", 5]), r'"emails\[1\]" must be an object'),
        (op("replace", "name.givenName", {"a": 1}), '"name.givenName" must be a string'),
        (op("replace", "title", "x" * 4097), '"title" is longer than 4096 characters'),
        (op("replace", "title"), '"replace" needs a value'),
        (op("add", "", "x"), "without a path, the value must be an object"),
        (op("add", "", [{"title": "x"}]), "without a path, the value must be an object"),
        (op("replace", "", {"active": "nope"}), '"active" must be a boolean'),
    ],
)
def test_bad_values(operation: Operation, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"operation 1 .*{message}"):
        patch_user(operation)


def test_removing_a_required_attribute_fails_clearly() -> None:
    with pytest.raises(
        InvalidArgument, match=r'operation 1 \(remove "userName"\): "userName" is required'
    ):
        patch_user(op("remove", "userName"))
    with pytest.raises(InvalidArgument, match='"userName" is required'):
        patch_user(op("replace", "userName", ""))
    with pytest.raises(InvalidArgument, match='"displayName" is required'):
        patch_group(op("Replace", "displayName", None))


def test_too_many_operations() -> None:
    assert patch_user(*[op("replace", "title", str(i)) for i in range(1000)]).document["title"]
    with pytest.raises(TooMany, match="at most 1000 operations"):
        patch_user(*[op("replace", "title", "x") for _ in range(1001)])


def test_too_many_values_after_adds() -> None:
    many = [{"value": f"{i}@x"} for i in range(60)]
    more = [{"value": f"{i}@y"} for i in range(60)]
    with pytest.raises(TooMany, match=r'operation 2 .*"emails" would have 122 values'):
        patch_user(op("add", "emails", many), op("add", "emails", more))


def test_the_failing_operation_is_named_by_index() -> None:
    with pytest.raises(InvalidPath, match=r'^operation 3 \(add "nope"\)'):
        patch_user(op("add", "title", "a"), op("add", "nickName", "b"), op("add", "nope", "c"))


# ---- fuzz


def _text(max_size: int) -> st.SearchStrategy[str]:
    # surrogates and NUL included: jsonb can store neither
    return st.text(st.characters(exclude_categories=()), max_size=max_size)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text(max_size=16),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
_paths = st.sampled_from(
    [
        "",
        "active",
        "userName",
        "displayName",
        "emails",
        'emails[type eq "work"].value',
        'emails[type eq "work"]',
        "emails.value",
        "name",
        "name.givenName",
        "members",
        'members[value eq "u-1"]',
        'members[value eq "u-1" or value eq "u-2"]',
        'members[display eq "x"]',
        MANAGER,
        f"{MANAGER}.value",
        ENTERPRISE_URN,
        f"{CUSTOM}:x",
        CUSTOM,
        "id",
        "meta.created",
        "password",
        "groups",
        "schemas",
        "urn:acme:ext:1.0:User:y.z",
        'emails[type eq "work"',
    ]
) | _text(max_size=30)
_ops = st.builds(
    Operation,
    op=st.sampled_from(["add", "Replace", "REMOVE", "move"]) | _text(max_size=8),
    path=_paths,
    value=_json | st.dictionaries(_paths, _json, max_size=4),
    has_value=st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(operations=st.lists(_ops, max_size=5))
def test_fuzz_apply_raises_only_core_errors(operations: list[Operation]) -> None:
    user = base_user() | {CUSTOM: {"x": {"y": [1, "z"]}}}
    user[ENTERPRISE_URN]["manager"] = {"value": "m-1", "$ref": "../Users/m-1"}
    for schema, document in ((USER, user), (GROUP, base_group())):
        try:
            result = patch.apply(schema, document, operations)
        except CoreError:
            continue
        assert "password" not in result.document
        assert "members" not in result.document
        assert result.document == documents.normalize(schema, result.document)
        stored = json.dumps(result.document, allow_nan=False, ensure_ascii=False)
        stored.encode()  # valid UTF-8
        assert "\\u0000" not in stored  # jsonb has no NUL
        assert not (result.members.add & result.members.remove)
        if schema is USER:
            assert result.members.empty
