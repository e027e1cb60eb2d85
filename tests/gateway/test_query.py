"""Query-string and SearchRequest parsing (RFC 7644 §3.4.2, §3.4.3, §3.9): unit tests."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import MultiDict
from scim2_models import InvalidSyntaxException, InvalidValueException
from yarl import URL

from gateway.mapping import list_query_to_proto
from gateway.query import (
    MAX_COUNT,
    ListQuery,
    Projection,
    list_query_from_params,
    list_query_from_search_request,
    projection_from_params,
)
from wando.provisioning.v1 import scim_pb2

GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"


def parse(query_string: str) -> ListQuery:
    """As aiohttp decodes a request's query string."""
    return list_query_from_params(URL(f"/Users?{query_string}").query)


def test_defaults() -> None:
    expected = ListQuery(filter="", start_index=1, count=None, sort_by="", sort_order="")
    assert parse("") == expected
    assert parse("filter=&startIndex=&count=&sortBy=&sortOrder=") == expected


@pytest.mark.parametrize(
    "query_string",
    [
        "filter=userName%20eq%20%22test.user%40okta.local%22&startIndex=1&count=100",  # Okta now
        "filter=userName+eq+%22test.user%40okta.local%22&startIndex=1&count=100",  # Okta 2018
        'filter=userName+eq+"test.user%40okta.local"&startIndex=1&count=100',  # Entra validator
        'filter=userName eq "test.user@okta.local"&startIndex=1&count=100',  # unencoded
    ],
)
def test_filter_spaces_decode_alike(query_string: str) -> None:
    query = parse(query_string)
    assert query.filter == 'userName eq "test.user@okta.local"'
    assert (query.start_index, query.count) == (1, 100)


def test_encoded_plus_stays_a_plus() -> None:
    assert parse("filter=userName%20eq%20%22a%2Bb%40x.example%22").filter == (
        'userName eq "a+b@x.example"'
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", 1), ("101", 101), ("0", 1), ("-5", 1), ("+3", 3), (" 7 ", 7), ("9" * 40, 2**31 - 1)],
)
def test_start_index_below_one_is_one(raw: str, expected: int) -> None:
    assert parse(f"startIndex={raw}").start_index == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0", 0), ("2", 2), ("-1", 0), ("1000", 1000), ("1001", MAX_COUNT), ("9" * 40, MAX_COUNT)],
)
def test_count_is_clamped(raw: str, expected: int) -> None:
    assert parse(f"count={raw}").count == expected


@pytest.mark.parametrize("param", ["startIndex", "count"])
@pytest.mark.parametrize("raw", ["abc", "1.5", "1e3", "0x10", "²", "1 2"])
def test_non_integers_are_invalid_values(param: str, raw: str) -> None:
    with pytest.raises(InvalidValueException) as caught:
        parse(f"{param}={raw}")
    assert param in caught.value.detail


def test_sort_and_projection() -> None:
    query = parse(
        "sortBy=meta.created&sortOrder=Descending&attributes=userName,%20emails"
        "&excludedAttributes=groups"
    )
    assert query.sort_by == "meta.created" and query.sort_order == "descending"
    assert query.projection == Projection(("userName", "emails"), ("groups",))
    message = list_query_to_proto(query)
    assert message.sort_order == scim_pb2.SORT_ORDER_DESCENDING
    assert not message.HasField("count")


def test_bad_sort_order() -> None:
    with pytest.raises(InvalidValueException):
        parse("sortOrder=sideways")


def test_unknown_parameters_are_ignored() -> None:
    # Entra's dialect flag may travel on every request
    assert parse("aadOptscim062020&foo=bar&count=5") == ListQuery(count=5)


def test_parameter_names_ignore_case_and_the_first_repeat_wins() -> None:
    params = MultiDict([("STARTINDEX", "3"), ("count", "4"), ("count", "9")])
    query = list_query_from_params(params)
    assert (query.start_index, query.count) == (3, 4)


def test_count_reaches_the_proto_including_zero() -> None:
    message = list_query_to_proto(parse("count=0&startIndex=101"))
    assert message.HasField("count") and message.count == 0 and message.start_index == 101


@pytest.mark.parametrize(
    ("params", "excluded"),
    [
        ({}, False),
        ({"excludedAttributes": "members"}, True),
        ({"excludedAttributes": "displayName,MEMBERS"}, True),
        ({"excludedAttributes": f"{GROUP_URN}:members"}, True),
        ({"excludedAttributes": "members.display"}, False),
        ({"attributes": "displayName"}, True),
        ({"attributes": "displayName,members"}, False),
        ({"attributes": "members.value"}, False),
        ({"attributes": f"{GROUP_URN}:members.value"}, False),
    ],
)
def test_when_members_are_excluded(params: dict[str, str], excluded: bool) -> None:
    assert projection_from_params(params).excludes("members", GROUP_URN) is excluded


def test_search_request() -> None:
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'displayName eq "Eng"',
        "startIndex": 2,
        "count": 10,
        "attributes": ["displayName", "id"],
        "excludedAttributes": "members",
        "sortBy": "displayName",
        "sortOrder": "ascending",
    }
    query = list_query_from_search_request(body)
    assert query == ListQuery(
        filter='displayName eq "Eng"',
        start_index=2,
        count=10,
        sort_by="displayName",
        sort_order="ascending",
        projection=Projection(("displayName", "id"), ("members",)),
    )


@pytest.mark.parametrize(
    "body",
    [
        {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]},
        {"schemas": "urn:ietf:params:scim:api:messages:2.0:SearchRequest"},
    ],
)
def test_search_request_with_wrong_schemas(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidSyntaxException):
        list_query_from_search_request(body)


@pytest.mark.parametrize(
    "body",
    [{"count": "ten"}, {"count": True}, {"startIndex": [1]}, {"filter": 5}, {"attributes": 3}],
)
def test_search_request_with_wrong_types(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidValueException):
        list_query_from_search_request(body)
