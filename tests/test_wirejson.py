"""common.wirejson: orjson where it answers as json does, json everywhere else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import wirejson
from core import fields
from core.errors import InvalidArgument

# JSON texts on which orjson and json disagree, or one of them refuses
TRICKY = [
    "123456789012345678901234567890",  # orjson: a float
    "-9223372036854775809",
    "18446744073709551616",
    '{"employeeNumber": 12345678901234567890123}',
    '"a string with 12345678901234567890 digits"',
    "1e400",  # json: inf
    '"\\ud800"',  # json: a lone surrogate
    '{"a": 1, "a": 2}',
    "-0",
    "[1.5, -0.0, 1E2, 0.1]",
    '"\\u0000"',
    "[" * 600 + "]" * 600,
]


@pytest.mark.parametrize("text", TRICKY)
def test_parse_answers_as_json_does(text: str) -> None:
    # the same value of the same types (an int stays an int; inf stays inf)
    assert repr(wirejson.parse(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', "{", "[1,]", ""])
def test_what_is_not_json_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument, match="user_json is not valid JSON"):
        fields.loads(text, "user_json")


def test_deep_nesting_is_refused_not_crashed() -> None:
    with pytest.raises(InvalidArgument):
        fields.loads("[" * 100_000 + "]" * 100_000, "value_json")


def test_stored_documents_are_written_as_json_reads_them() -> None:
    document: dict[str, Any] = {
        "userName": "zoë@x.example",
        "n": 10**30,  # more than 64 bits: json writes it, exactly
        "list": [1.5, -0.0, True, None, {"nested": "é"}],
    }
    assert json.loads(wirejson.dumps_stored(document)) == document
    assert str(10**30) in wirejson.dumps_stored(document)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_any_value_round_trips_as_with_json(value: Any) -> None:
    text = json.dumps(value)
    assert repr(wirejson.parse(text)) == repr(json.loads(text))
    assert repr(wirejson.parse(wirejson.dumps_stored(value))) == repr(json.loads(text))
