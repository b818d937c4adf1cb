"""Parameter validation: every failure names the parameter and says what is accepted."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from k2.query.errors import CapExceededError, InvalidParameterError
from k2.query.params import (
    TimeRange,
    parse_date,
    parse_duration,
    parse_order,
    parse_symbols,
    parse_time,
    parse_timezone,
)


def test_symbols_are_split_upper_cased_and_deduplicated() -> None:
    assert parse_symbols("bhp, RIO,bhp") == ("BHP", "RIO")
    assert parse_symbols(["brk.b", "RIO-W"]) == ("BRK.B", "RIO-W")
    assert parse_symbols(None, required=False) == ()


@pytest.mark.parametrize("bad", ["BHP;DROP", "' OR 1=1 --", "A" * 17, "-X", "BH P", "ÄBC"])
def test_bad_symbols(bad: str) -> None:
    with pytest.raises(InvalidParameterError, match="is not a valid symbol") as info:
        parse_symbols(bad)
    assert info.value.parameter == "symbols"


def test_symbols_required_and_bounded() -> None:
    with pytest.raises(InvalidParameterError, match="at least one symbol"):
        parse_symbols(" , ")
    with pytest.raises(InvalidParameterError, match="at most 100"):
        parse_symbols([f"S{i}" for i in range(101)])


def test_times() -> None:
    assert parse_time("2014-03-11T10:15:00+11:00", "start") == datetime(2014, 3, 10, 23, 15, tzinfo=UTC)
    assert parse_time("2014-03-10T23:15:00Z", "start") == datetime(2014, 3, 10, 23, 15, tzinfo=UTC)
    assert parse_time("2014-03-10", "start") == datetime(2014, 3, 10, tzinfo=UTC)
    with pytest.raises(InvalidParameterError, match="start: 'yesterday' is not an ISO 8601 time"):
        parse_time("yesterday", "start")
    with pytest.raises(InvalidParameterError, match="outside"):
        parse_time("0001-01-01T00:00:00Z", "end")


def test_time_range() -> None:
    window = TimeRange.parse("2014-03-10T23:00:00Z", "2014-03-10T23:15:00Z", max_days=31)
    assert window.end_us - window.start_us == 15 * 60 * 1_000_000
    with pytest.raises(InvalidParameterError, match=r"end: .* is not after start"):
        TimeRange.parse("2014-03-10T23:00:00Z", "2014-03-10T22:00:00Z", max_days=31)
    with pytest.raises(InvalidParameterError, match="start: is required"):
        TimeRange.parse(None, "2014-03-10T22:00:00Z", max_days=31)
    with pytest.raises(CapExceededError, match=r"at most 2 days per query \(api.max_range_days\)") as info:
        TimeRange.parse("2014-03-01", "2014-03-10", max_days=2)
    assert info.value.status_code == 400 and info.value.requested == 9


@pytest.mark.parametrize(
    ("text", "micros"), [("1s", 1_000_000), ("15m", 900_000_000), ("1h", 3_600_000_000), ("1d", 86_400_000_000),
                          ("90", 90_000_000), ("250ms", 250_000), ("5 min", 300_000_000)],
)  # fmt: skip
def test_durations(text: str, micros: int) -> None:
    assert parse_duration(text, "interval", minimum_us=1, maximum_us=86_400_000_000) == micros


@pytest.mark.parametrize("bad", ["7x", "", "1w", "-1s", "1e3s", "m"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(
        InvalidParameterError, match=r"interval: .* is not a duration; use a number and a unit"
    ):
        parse_duration(bad, "interval", minimum_us=1_000_000, maximum_us=86_400_000_000)


def test_duration_range() -> None:
    with pytest.raises(InvalidParameterError, match="between 1s and 1d"):
        parse_duration("2d", "interval", minimum_us=1_000_000, maximum_us=86_400_000_000)
    with pytest.raises(InvalidParameterError, match="between 1s and 1d"):
        parse_duration("500ms", "interval", minimum_us=1_000_000, maximum_us=86_400_000_000)


@pytest.mark.parametrize("huge", ["9" * 400, "9" * 400 + "s", "9" * 400 + "ms", "1" + "0" * 320 + "d"])
def test_a_400_digit_duration_is_out_of_range_not_a_crash(huge: str) -> None:
    with pytest.raises(InvalidParameterError, match="out of range: between 1s and 1d") as info:
        parse_duration(huge, "interval", minimum_us=1_000_000, maximum_us=86_400_000_000)
    assert len(str(info.value)) < 120  # the value is not echoed in full


def test_order_date_and_timezone() -> None:
    assert parse_order(None) == "asc" and parse_order("newest") == "desc"
    with pytest.raises(InvalidParameterError, match="order"):
        parse_order("sideways")
    assert parse_date("2014-03-11", "start") == date(2014, 3, 11)
    with pytest.raises(InvalidParameterError, match="use YYYY-MM-DD"):
        parse_date("11/03/2014", "start")
    assert parse_timezone("Australia/Sydney") == "Australia/Sydney"
    for bad in ("Mars/Olympus", "../../etc/passwd", "UTC'; --", "America", "posixrules", "right/UTC"):
        with pytest.raises(InvalidParameterError, match="tz"):
            parse_timezone(bad)
