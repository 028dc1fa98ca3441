"""RFC 3339 in and out: whatever the schema lets through, the parser takes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rfc3339_validator import validate_rfc3339

from keyplane.db.errors import InvalidInput
from keyplane.db.timefmt import parse_rfc3339, rfc3339

offsets = st.one_of(
    st.just("Z"),
    st.builds(
        "{}{:02d}:{:02d}".format,
        st.sampled_from("+-"),
        st.integers(0, 23),
        st.integers(0, 59),
    ),
)


@given(
    moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)),
    offset=offsets,
)
def test_every_valid_rfc3339_date_time_parses_to_utc(moment, offset):
    text = moment.isoformat(timespec="seconds") + offset
    assert validate_rfc3339(text)
    parsed = parse_rfc3339(text, ["body", "expires_at"])
    assert parsed is not None
    assert parsed.tzinfo is UTC


def test_edges_of_the_calendar_clamp_instead_of_failing():
    early = parse_rfc3339("0001-01-01T00:30:00+01:00", ["x"])
    late = parse_rfc3339("9999-12-31T23:59:59-01:00", ["x"])
    assert early == datetime.min.replace(tzinfo=UTC)
    assert late == datetime.max.replace(tzinfo=UTC)


def test_a_date_time_without_an_offset_is_refused():
    with pytest.raises(InvalidInput) as refused:
        parse_rfc3339("2030-01-01T00:00:00", ["body", "expires_at"])
    assert refused.value.loc == ["body", "expires_at"]


def test_output_is_utc_with_z():
    moment = datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
    assert rfc3339(moment) == "2030-01-01T02:00:00Z"
    assert rfc3339(None) is None
