"""core.documents: SCIM bodies (POST/PUT) → the stored document, with the RFC's
own examples and what Okta and Entra really send."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.wire import GROUP_URN, USER_URN
from core import documents
from core.errors import CoreError, InvalidArgument, InvalidSyntax, TooMany
from core.schema import ENTERPRISE_URN, group_schema, user_schema

SAMPLES = Path(__file__).parent / "samples"
USER = user_schema()
GROUP = group_schema()


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return loaded


def user(**attrs: Any) -> dict[str, Any]:
    return documents.normalize(USER, {"userName": "bjensen", **attrs})


# ---- the RFC 7643 §8 examples


def test_rfc_enterprise_user_normalises_to_its_writable_attributes() -> None:
    body = sample("rfc7643-8.3-user-enterprise.json")
    document = documents.normalize(USER, body)
    expected = {
        key: value
        for key, value in body.items()
        if key not in ("schemas", "id", "meta", "groups", "password")
    }
    # manager.displayName is readOnly (RFC 7643 §4.3): never stored
    del expected[ENTERPRISE_URN]["manager"]["displayName"]
    assert document == expected
    assert list(document) == list(expected)  # order kept


def test_rfc_group_normalises_without_members() -> None:
    body = sample("rfc7643-8.4-group.json")
    assert documents.normalize(GROUP, body) == {"displayName": "Tour Guides"}
    assert documents.member_ids(body) == [
        "2819c223-7f76-453a-919d-413861904646",
        "902c246b-6245-4190-8e05-00816be7344a",
    ]


def test_normalising_is_idempotent() -> None:
    once = documents.normalize(USER, sample("rfc7643-8.3-user-enterprise.json"))
    assert documents.normalize(USER, once) == once


# ---- what Okta sends


def test_okta_create_user_drops_password_groups_and_schemas() -> None:
    body = {
        "schemas": [USER_URN],
        "userName": "test.user@okta.local",
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": "test.user@okta.local", "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }
    document = documents.normalize(USER, body)
    assert document == {
        "userName": "test.user@okta.local",
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": "test.user@okta.local", "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "active": True,
    }
    assert "1mz050nq" not in json.dumps(document)


def test_okta_put_ignores_id_meta_and_2018_dates() -> None:
    body = {
        "schemas": [USER_URN],
        "id": "u-1",
        "userName": "test.user@okta.local",
        "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
        "emails": [
            {
                "primary": True,
                "value": "test.user@okta.local",
                "type": "work",
                "display": "test.user@okta.local",
            }
        ],
        "active": False,
        "groups": [],
        "password": "secret-placeholder",
        "meta": {"resourceType": "User", "created": "04-12-2018 00:00:00"},
    }
    document = documents.normalize(USER, body)
    assert set(document) == {"userName", "name", "emails", "active"}
    assert document["active"] is False


def test_okta_group_push_with_members() -> None:
    body = {
        "schemas": [GROUP_URN],
        "id": "g-1",
        "displayName": "New name",
        "members": [
            {"value": "u-1", "display": "bob@example.com"},
            {"value": "u-2", "display": "pete@example.com"},
        ],
    }
    assert documents.normalize(GROUP, body) == {"displayName": "New name"}
    assert documents.member_ids(body) == ["u-1", "u-2"]


def test_okta_group_create_with_empty_members() -> None:
    body = {"schemas": [GROUP_URN], "displayName": "Test SCIMv2", "members": []}
    assert documents.normalize(GROUP, body) == {"displayName": "Test SCIMv2"}
    assert documents.member_ids(body) == []


# ---- what Entra (and its validator) send


ENTRA_VALIDATOR_USER: dict[str, Any] = {
    # shaped after the Microsoft SCIM Validator's "Create a new User" (not verbatim)
    "schemas": [USER_URN, ENTERPRISE_URN],
    "userName": "dale.mohr@romaguera.uk",
    "active": True,
    "displayName": "Dale Mohr",
    "timezone": "Asia/Kathmandu",
    "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
    "emails": [{"type": "work", "value": "dale.mohr@romaguera.uk", "primary": True}],
    "name": {"givenName": "Dale", "familyName": "Mohr", "formatted": "Dale Mohr"},
    "addresses": [{"type": "work", "streetAddress": "38470 Cronin Mission", "primary": "False"}],
    "phoneNumbers": [
        {"type": "work", "value": "6-412-755-8651", "primary": "True"},
        {"type": "mobile", "value": "9-017-240-1722"},
    ],
    "roles": [{"primary": "True", "display": "Rosa", "value": "Dale", "type": "Reggie"}],
    ENTERPRISE_URN: {
        "employeeNumber": "GEWZDLXS",
        "department": "IGFRJFLVOCHC",
        "manager": {"value": "ZHMZJHWHGFXQ"},
    },
    "meta": {"resourceType": "User"},
}


def test_entra_validator_create_user_with_string_primaries() -> None:
    document = documents.normalize(USER, ENTRA_VALIDATOR_USER)
    assert document["roles"] == [
        {"primary": True, "display": "Rosa", "value": "Dale", "type": "Reggie"}
    ]
    assert document["addresses"][0]["primary"] is False
    assert document["phoneNumbers"][0]["primary"] is True
    assert document[ENTERPRISE_URN]["manager"] == {"value": "ZHMZJHWHGFXQ"}
    assert "meta" not in document


def test_entra_create_user_with_meta_and_empty_roles() -> None:
    body = {
        "schemas": [USER_URN, ENTERPRISE_URN],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": "Test_User_11bb@testuser.com"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName"},
        "roles": [],
    }
    document = documents.normalize(USER, body)
    assert "roles" not in document  # [] is unassigned
    assert "meta" not in document


@pytest.mark.parametrize(
    ("sent", "stored"), [("True", True), ("False", False), ("false", False), ("TRUE", True)]
)
def test_entra_string_booleans(sent: str, stored: bool) -> None:
    assert user(active=sent)["active"] is stored
    assert user(emails=[{"value": "a@b.c", "primary": sent}])["emails"][0]["primary"] is stored


def test_entra_group_with_unknown_schema_urn_in_schemas() -> None:
    body = {
        "schemas": [
            GROUP_URN,
            "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
        ],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "displayName": "displayName",
        "meta": {"resourceType": "Group"},
    }
    assert documents.normalize(GROUP, body) == {
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "displayName": "displayName",
    }
    assert documents.member_ids(body) is None


@pytest.mark.parametrize(
    ("manager", "stored"),
    [
        ("m-1", {"value": "m-1"}),
        ({"value": "m-1"}, {"value": "m-1"}),
        ({"value": "m-1", "displayName": "John"}, {"value": "m-1"}),
        ("", None),
        ({"value": ""}, None),
        (None, None),
    ],
)
def test_enterprise_manager_forms(manager: Any, stored: dict[str, str] | None) -> None:
    document = user(**{ENTERPRISE_URN: {"manager": manager, "department": "Sales"}})
    assert document[ENTERPRISE_URN].get("manager") == stored
    assert document[ENTERPRISE_URN]["department"] == "Sales"


# ---- canonical names, URNs and what is dropped


def test_names_are_matched_without_regard_to_case() -> None:
    document = documents.normalize(
        USER,
        {
            "USERNAME": "bjensen",
            "Name": {"GivenName": "Barbara", "FAMILYNAME": "Jensen"},
            "emails": [{"VALUE": "b@example.com", "Type": "work"}],
            ENTERPRISE_URN.upper(): {"EmployeeNumber": "1"},
        },
    )
    assert document == {
        "userName": "bjensen",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [{"value": "b@example.com", "type": "work"}],
        ENTERPRISE_URN: {"employeeNumber": "1"},
    }


def test_urn_qualified_top_level_keys() -> None:
    document = documents.normalize(
        USER,
        {
            f"{USER_URN}:userName": "bjensen",
            f"{ENTERPRISE_URN}:department": "Sales",
            USER_URN: {"title": "Boss"},
        },
    )
    assert document == {
        "userName": "bjensen",
        ENTERPRISE_URN: {"department": "Sales"},
        "title": "Boss",
    }


def test_unknown_urn_kept_exactly_as_sent() -> None:
    custom = "urn:ietf:params:scim:schemas:extension:CustomExt:2.0:User"
    value = {"Cost Code": " A1 ", "nested": {"list": [1, 2.5, True, None, "x"]}}
    document = user(**{custom: value})
    assert document[custom] == value


def test_standard_urns_are_never_kept_as_unknown_extensions() -> None:
    assert user(**{"urn:ietf:params:scim:schemas:core:2.0:Group": {"displayName": "x"}}) == {
        "userName": "bjensen"
    }


def test_unknown_urn_must_be_an_object() -> None:
    with pytest.raises(InvalidArgument, match=r"urn:acme:ext:1.0:User.*must be an object"):
        user(**{"urn:acme:ext:1.0:User": "x"})


def test_unknown_attributes_and_sub_attributes_are_ignored() -> None:
    document = user(
        favouriteColour="blue",
        name={"givenName": "B", "shoeSize": 42},
        emails=[{"value": "a@b.c", "verified": True}],
    )
    assert document == {
        "userName": "bjensen",
        "name": {"givenName": "B"},
        "emails": [{"value": "a@b.c"}],
    }


def test_read_only_attributes_are_dropped() -> None:
    document = user(id="x", meta={"created": "now"}, groups=[{"value": "g"}])
    assert document == {"userName": "bjensen"}


def test_password_is_never_stored_whatever_its_value() -> None:
    for password in ("p", 42, None, {"x": 1}, ["a"]):
        assert "password" not in user(password=password)


def test_strings_are_kept_exactly() -> None:
    document = user(
        displayName="  Babs  ", nickName="Ünïcødé ☃", phoneNumbers=[{"value": "+1 (555) 0100"}]
    )
    assert document["displayName"] == "  Babs  "
    assert document["nickName"] == "Ünïcødé ☃"
    assert document["phoneNumbers"] == [{"value": "+1 (555) 0100"}]


def test_null_and_empty_are_unassigned() -> None:
    document = user(displayName=None, title="", emails=[], name={"givenName": ""}, ims=None)
    assert document == {"userName": "bjensen"}


def test_single_object_for_multi_valued_is_wrapped() -> None:
    assert user(emails={"value": "a@b.c"})["emails"] == [{"value": "a@b.c"}]


def test_active_absent_stays_absent() -> None:
    assert "active" not in user()


# ---- errors


@pytest.mark.parametrize("body", [[], "user", 1, None, True, [{"userName": "x"}]])
def test_a_non_object_body_is_invalid_syntax(body: Any) -> None:
    with pytest.raises(InvalidSyntax, match="must be a JSON object"):
        documents.normalize(USER, body)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"active": "yes"}, '"active" must be a boolean'),
        ({"active": 1}, '"active" must be a boolean'),
        ({"displayName": 5}, '"displayName" must be a string, not a number'),
        ({"name": "Barbara"}, '"name" must be an object, not a string'),
        ({"name": {"givenName": ["B"]}}, '"name.givenName" must be a string, not a list'),
        ({"emails": [5]}, r'"emails\[0\]" must be an object'),
        (
            {"emails": [{"value": "a", "primary": "maybe"}]},
            r'"emails\[0\].primary" must be a boolean',
        ),
        ({ENTERPRISE_URN: {"department": 7}}, f'"{ENTERPRISE_URN}:department" must be a string'),
        ({ENTERPRISE_URN: "Sales"}, f'"{ENTERPRISE_URN}" must be an object'),
        ({"userName": 5}, '"userName" must be a string'),
    ],
)
def test_wrong_types_name_the_attribute(attrs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        documents.normalize(USER, {"userName": "bjensen", **attrs})


@pytest.mark.parametrize("name", [None, "", "   "])
def test_user_name_is_required(name: Any) -> None:
    with pytest.raises(InvalidArgument, match='"userName"'):
        documents.normalize(USER, {"userName": name, "displayName": "x"})
    with pytest.raises(InvalidArgument, match='"userName" is required'):
        documents.normalize(USER, {"displayName": "x"})


def test_group_display_name_is_required() -> None:
    with pytest.raises(InvalidArgument, match='"displayName" is required'):
        documents.normalize(GROUP, {"members": []})


def test_oversize_string() -> None:
    assert user(title="x" * 4096)["title"] == "x" * 4096
    with pytest.raises(InvalidArgument, match='"title" is longer than 4096 characters'):
        user(title="x" * 4097)
    with pytest.raises(InvalidArgument, match="longer than 4096"):
        user(**{"urn:acme:ext:1.0:User": {"k": "x" * 4097}})


def test_too_many_values() -> None:
    assert len(user(emails=[{"value": f"{i}@x"} for i in range(100)])["emails"]) == 100
    with pytest.raises(TooMany, match='"emails" has 101 values; at most 100'):
        user(emails=[{"value": f"{i}@x"} for i in range(101)])


def test_nul_characters_cannot_be_stored() -> None:
    with pytest.raises(InvalidArgument, match="NUL"):
        user(displayName="a\x00b")


def test_unknown_urn_keys_must_be_storable() -> None:
    with pytest.raises(InvalidArgument, match="NUL"):
        user(**{"urn:acme:ext:1.0:U\x00ser": {"a": 1}})
    with pytest.raises(InvalidArgument, match="not valid Unicode"):
        user(**{"urn:acme:ext:1.0:User": {"a\ud800": 1}})


def test_several_primaries_are_rejected() -> None:
    with pytest.raises(
        InvalidArgument, match='at most one value of "emails" may have "primary": true'
    ):
        user(emails=[{"value": "a", "primary": True}, {"value": "b", "primary": "True"}])


def test_the_same_attribute_twice_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match='"userName" is given more than once'):
        documents.normalize(USER, {"userName": "a", "USERNAME": "b"})


def test_deeply_nested_junk_under_an_unknown_urn() -> None:
    junk: Any = "x"
    for _ in range(5000):
        junk = [junk]
    with pytest.raises(InvalidArgument, match="nests more than"):
        user(**{"urn:acme:ext:1.0:User": {"junk": junk}})
    # and where a known attribute expects a string, junk is just the wrong type
    with pytest.raises(InvalidArgument, match='"title" must be a string'):
        user(title=junk)


# ---- member_ids


def test_member_ids_order_kept_and_duplicates_removed() -> None:
    body = {"members": [{"value": "b"}, {"value": "a"}, {"value": "b", "display": "B"}]}
    assert documents.member_ids(body) == ["b", "a"]


@pytest.mark.parametrize("body", [{}, {"members": None}, {"displayName": "x"}])
def test_member_ids_none_when_absent(body: dict[str, Any]) -> None:
    assert documents.member_ids(body) is None


@pytest.mark.parametrize(
    ("members", "index"),
    [
        ([{"value": "a"}, {"value": ""}], 1),
        ([{"value": "a"}, {"display": "x"}], 1),
        (["a"], 0),
        ([{"value": 5}], 0),
    ],
)
def test_member_ids_bad_elements_name_the_index(members: Any, index: int) -> None:
    with pytest.raises(InvalidArgument, match=rf"members\[{index}\]"):
        documents.member_ids({"members": members})


# ---- fuzz


def _text(max_size: int) -> st.SearchStrategy[str]:
    # surrogates and NUL included: jsonb can store neither
    return st.text(st.characters(exclude_categories=()), max_size=max_size)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
_keys = st.sampled_from(
    [
        "userName",
        "displayName",
        "members",
        "emails",
        "name",
        "active",
        "password",
        "roles",
        "groups",
        ENTERPRISE_URN,
        f"{ENTERPRISE_URN}:manager",
        "urn:acme:ext:1.0:User",
    ]
) | _text(max_size=12)
_bodies = st.dictionaries(_keys, _json, max_size=6) | _json


@settings(max_examples=300, deadline=None)
@given(body=_bodies)
def test_fuzz_normalize_raises_only_core_errors(body: Any) -> None:
    for schema in (USER, GROUP):
        try:
            document = documents.normalize(schema, body)
        except CoreError:
            continue
        assert "password" not in document
        stored = json.dumps(document, allow_nan=False, ensure_ascii=False)
        stored.encode()  # valid UTF-8
        assert "\\u0000" not in stored  # jsonb has no NUL
    with contextlib.suppress(CoreError):
        documents.member_ids(body)
