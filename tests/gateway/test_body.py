"""JSON request bodies: unit tests of the parser (HTTP behaviour is in test_http)."""

from __future__ import annotations

import pytest
from scim2_models import InvalidSyntaxException

from gateway.body import MAX_DEPTH, parse_json_object


def test_objects_parse_whatever_the_encoding() -> None:
    assert parse_json_object(b'{"a": [1, 2.5, "\xc3\xa9"]}') == {"a": [1, 2.5, "é"]}
    assert parse_json_object('{"a": 1}'.encode("utf-16")) == {"a": 1}
    assert parse_json_object(b'\xef\xbb\xbf{"bom": true}') == {"bom": True}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"{",
        b"not json",
        b"[]",
        b'"text"',
        b"null",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": 1e999}',
        b'{"a": ' + b"9" * 400 + b"}",
        b'{"a": "\xc3"}',
        b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_invalid_syntax(data: bytes) -> None:
    with pytest.raises(InvalidSyntaxException) as caught:
        parse_json_object(data)
    assert caught.value.scim_type == "invalidSyntax" and caught.value.detail


def test_depth_limit_is_inclusive() -> None:
    nested = b'{"a":' * (MAX_DEPTH - 1) + b"{}" + b"}" * (MAX_DEPTH - 1)
    assert parse_json_object(nested)
