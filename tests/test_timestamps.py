"""Rows' timestamps as proto Timestamps: core.organizations.timestamp is a
faster Timestamp.FromDatetime and must agree with it everywhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from core.organizations import timestamp


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=7))]
        ),
    )
)
def test_timestamp_agrees_with_from_datetime(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value)
    assert timestamp(value) == expected


def test_no_timestamp_for_none() -> None:
    assert timestamp(None) is None
