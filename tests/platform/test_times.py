"""Bus time as ClickHouse text (``schemas.times.ch_time``): every form the bus and the stored state
hold, checked against the time ``datetime`` reads from the same text, truncated to milliseconds as
a ``DateTime64(3)`` column keeps it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.times import CH_EPOCH, bus_time, ch_time, from_ch


def expected(iso: str) -> str:
    dt = datetime.fromisoformat(iso)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


@pytest.mark.parametrize(
    "iso",
    [
        "2026-12-01T10:00:00Z",  # no fraction (orjson writes none for a whole second)
        "2026-12-01T10:00:00.123456Z",  # the bus's usual form
        "2026-12-01T10:00:00.123Z",  # stored state read back (from_ch)
        "2026-12-01T10:00:00.1234Z",
        "2026-12-01T10:00:00.000001Z",
        "1970-01-01T00:00:00.999999Z",
    ],
)
def test_each_form_of_bus_time(iso: str) -> None:
    assert ch_time(iso) == expected(iso)


def test_no_time_is_the_epoch() -> None:
    assert ch_time("") == CH_EPOCH


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_any_bus_time_and_its_stored_form_read_back(dt: datetime) -> None:
    iso = bus_time(dt)
    assert ch_time(iso) == expected(iso)
    assert ch_time(from_ch(ch_time(iso))) == ch_time(iso)  # what visitor_state gives back converts the same
