"""attributes / excludedAttributes on a resource's JSON (RFC 7644 §3.4.2.5, §3.9),
and the rest of the JSON ⇄ proto mapping: unit tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from scim2_models import InvalidSyntaxException

from gateway.mapping import (
    list_response,
    patch_operations_from_scim,
    resource_json_from_scim,
    scim_from_resource,
    scim_from_resource_json,
)
from gateway.projection import project
from gateway.query import Projection
from wando.provisioning.v1 import scim_pb2

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

RESOURCE: dict[str, Any] = {
    "schemas": [USER, ENTERPRISE],
    "id": "u-1",
    "userName": "bjensen",
    "name": {"givenName": "Barbara", "familyName": "Jensen"},
    "emails": [
        {"value": "b@example.com", "type": "work", "primary": True},
        {"value": "bj@home.example", "type": "home"},
    ],
    "active": True,
    "groups": [{"value": "g-1", "display": "Eng"}],
    ENTERPRISE: {"department": "Sales", "manager": {"value": "u-2"}},
    "meta": {"resourceType": "User", "version": 'W/"1"'},
}


def _split(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def projected(attributes: str = "", excluded: str = "") -> dict[str, Any]:
    original = copy.deepcopy(RESOURCE)
    out = project(RESOURCE, Projection(_split(attributes), _split(excluded)), USER)
    assert original == RESOURCE, "projection must not change its input"
    return out


def test_nothing_asked_returns_everything() -> None:
    assert projected() == RESOURCE


def test_attributes_keep_always_returned_ones() -> None:
    assert projected("userName") == {
        "schemas": [USER],
        "id": "u-1",
        "userName": "bjensen",
        "meta": RESOURCE["meta"],
    }


def test_attributes_ignore_case_and_take_sub_attributes_and_urns() -> None:
    out = projected(f"NAME.givenName,emails.value,{USER}:active,{ENTERPRISE}:department")
    assert out["name"] == {"givenName": "Barbara"}
    assert out["emails"] == [{"value": "b@example.com"}, {"value": "bj@home.example"}]
    assert out["active"] is True
    assert out[ENTERPRISE] == {"department": "Sales"}
    assert "groups" not in out and "userName" not in out
    assert out["schemas"] == [USER, ENTERPRISE]


def test_a_whole_extension_by_its_urn() -> None:
    assert projected(ENTERPRISE)[ENTERPRISE] == RESOURCE[ENTERPRISE]


def test_attributes_naming_nothing_select_nothing() -> None:
    out = projected("nickName,userName.first,urn:example:unknown:attr")
    assert set(out) == {"schemas", "id", "meta"}


def test_excluded_attributes() -> None:
    out = projected(excluded="groups,emails.type,name.givenName,name.familyName")
    assert "groups" not in out and "name" not in out
    assert out["emails"] == [
        {"value": "b@example.com", "primary": True},
        {"value": "bj@home.example"},
    ]
    assert out[ENTERPRISE] == RESOURCE[ENTERPRISE]


def test_excluding_a_whole_extension_drops_its_schema() -> None:
    out = projected(excluded=f"{ENTERPRISE}:department,{ENTERPRISE}:manager")
    assert ENTERPRISE not in out and out["schemas"] == [USER]


def test_always_returned_attributes_cannot_be_excluded() -> None:
    out = projected(excluded="id,schemas,meta")
    assert out["id"] == "u-1" and out["schemas"] and out["meta"]


def test_round_trip_through_the_wire_keeps_every_value() -> None:
    body = {"a": 42, "b": 1.5, "c": [1, {"d": -3}], "e": None, "f": True, "g": 2**60, "h": "é"}
    back = scim_from_resource_json(resource_json_from_scim(body))
    assert back == body
    assert type(back["a"]) is int and type(back["g"]) is int  # exact, even beyond 2**53
    assert resource_json_from_scim(body).isascii()  # valid UTF-8 whatever the strings


def test_resource_gets_location_and_never_a_password() -> None:
    text = resource_json_from_scim({**RESOURCE, "password": "1mz050nq", "Password": "x"})
    user = scim_pb2.User(id="u-1", resource_json=text, etag='W/"1"')
    out = scim_from_resource(
        user,
        base_url="https://h/scim",
        location="https://h/scim/Users/u-1",
        projection=Projection(),
        core_urn=USER,
    )
    assert "password" not in {key.lower() for key in out}
    assert out["meta"] == {**RESOURCE["meta"], "location": "https://h/scim/Users/u-1"}


def test_list_response_shape() -> None:
    assert list_response([], 0, 1) == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }


def test_patch_operations_are_forwarded_as_sent() -> None:
    ops = patch_operations_from_scim(
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "operations": [
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "replace", "value": {"active": False}},
                {"op": "remove", "path": 'members[value eq "u-9"]'},
                {"OP": "add", "Path": "nickName", "Value": None},
            ],
        }
    )
    assert [(o.op, o.path, o.value_json) for o in ops] == [
        ("Replace", "active", '"False"'),
        ("replace", "", '{"active":false}'),
        ("remove", 'members[value eq "u-9"]', ""),  # no value: empty
        ("add", "nickName", "null"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"Operations": {"op": "add"}},
        {"Operations": ["add"]},
        {"Operations": [{"path": "x"}]},
        {"Operations": [{"op": 1}]},
        {"Operations": [{"op": "add", "path": 3}]},
    ],
)
def test_patch_envelope_errors(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidSyntaxException):
        patch_operations_from_scim(body)


def test_reading_order_puts_identity_first_and_meta_last() -> None:
    text = resource_json_from_scim(
        {"meta": {}, ENTERPRISE: {}, "userName": "b", "ExternalId": "e", "id": "u", "schemas": []}
    )
    out = scim_from_resource(
        scim_pb2.User(resource_json=text),
        base_url="b",
        location="l",
        projection=Projection(),
        core_urn=USER,
    )
    assert list(out) == ["schemas", "id", "ExternalId", "userName", ENTERPRISE, "meta"]
