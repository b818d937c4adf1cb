"""Parsing and validation of query parameters, shared by the API and the CLI.

Every value a caller sends passes through here before it reaches the engine, and every failure is
an ``InvalidParameterError`` that names the parameter, shows what was wrong and what is accepted.
Values are validated *and* bound as SQL parameters later; validation is for helpful messages, the
binding is what keeps SQL injection out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Literal

from k2.query.errors import CapExceededError, InvalidParameterError
from k2.types import EXCHANGE_TIMEZONES

__all__ = [
    "MAX_SYMBOLS",
    "Order",
    "TimeRange",
    "TimeTravel",
    "exchange_timezone",
    "parse_date",
    "parse_duration",
    "parse_order",
    "parse_symbols",
    "parse_time",
    "parse_timezone",
]

Order = Literal["asc", "desc"]

#: A ticker: letters and digits, then optionally '.', '-', '_' (BRK.B, RIO-W); at most 16 characters.
SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,15}$")
MAX_SYMBOLS = 100
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|sec|secs|m|min|mins|h|hr|hrs|d|day|days)?\s*$")
_UNIT_US = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "sec": 1_000_000,
    "secs": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "mins": 60_000_000,
    "h": 3_600_000_000,
    "hr": 3_600_000_000,
    "hrs": 3_600_000_000,
    "d": 86_400_000_000,
    "day": 86_400_000_000,
    "days": 86_400_000_000,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_symbols(
    value: str | Iterable[str] | None, *, required: bool = True, name: str = "symbols"
) -> tuple[str, ...]:
    """Split, upper-case, validate and de-duplicate symbols ("bhp,RIO" -> ("BHP", "RIO")).

    Raises:
        InvalidParameterError: a symbol is malformed, there are none when required, or too many.
    """
    raw = [value] if isinstance(value, str) else list(value or [])
    parts = [p.strip().upper() for item in raw for p in str(item).split(",") if p.strip()]
    if not parts:
        if required:
            raise InvalidParameterError(name, "at least one symbol is required (e.g. symbols=BHP,RIO)")
        return ()
    for part in parts:
        if not SYMBOL_RE.match(part):
            raise InvalidParameterError(
                name,
                f"{part[:40]!r} is not a valid symbol: use 1-16 characters, letters and digits, "
                "then optionally '.', '-' or '_' (e.g. BHP, BRK.B)",
                part,
            )
    unique = tuple(dict.fromkeys(parts))
    if len(unique) > MAX_SYMBOLS:
        raise InvalidParameterError(name, f"{len(unique)} symbols given; at most {MAX_SYMBOLS} per query")
    return unique


def parse_time(value: str | datetime, name: str) -> datetime:
    """An ISO 8601 instant as an aware UTC datetime; a value without an offset is taken as UTC.

    Accepts '2014-03-10T23:15:00Z', '2014-03-11T10:15:00+11:00', '2014-03-10' (midnight UTC).

    Raises:
        InvalidParameterError: the value is not an ISO 8601 date or date-time.
    """
    if isinstance(value, datetime):
        parsed = value
    else:
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError as exc:
            raise InvalidParameterError(
                name,
                f"{text[:40]!r} is not an ISO 8601 time; use e.g. 2014-03-10T23:15:00Z or "
                "2014-03-11T10:15:00+11:00 (no offset means UTC)",
                text,
            ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    if not datetime(1970, 1, 2, tzinfo=UTC) <= parsed <= datetime(2200, 1, 1, tzinfo=UTC):
        raise InvalidParameterError(name, f"{parsed.isoformat()} is outside 1970-01-02 … 2200-01-01", value)
    return parsed


def parse_date(value: str | date, name: str) -> date:
    """A calendar date (a trading session), 'YYYY-MM-DD'.

    Raises:
        InvalidParameterError: the value is not a date.
    """
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidParameterError(name, f"{value[:40]!r} is not a date; use YYYY-MM-DD", value) from exc


def parse_duration(value: str, name: str, *, minimum_us: int, maximum_us: int) -> int:
    """A duration such as '1s', '250ms', '15m', '1h', '1d' (or a bare number of seconds) in µs.

    Raises:
        InvalidParameterError: the text is not a duration or lies outside [minimum, maximum].
    """
    match = _DURATION_RE.match(value.lower()) if isinstance(value, str) else None
    if match is None:
        raise InvalidParameterError(
            name,
            f"{str(value)[:40]!r} is not a duration; use a number and a unit: ms, s, m, h or d "
            f"(e.g. 1s, 1m, 15m, 1h, 1d), between {_show(minimum_us)} and {_show(maximum_us)}",
            value,
        )
    number, unit = float(match.group(1)), match.group(2) or "s"
    scaled = number * _UNIT_US[unit]  # a 400-digit number is inf here: no round(), no OverflowError
    if not (math.isfinite(scaled) and minimum_us <= scaled <= maximum_us + 0.5):
        raise InvalidParameterError(
            name,
            f"{value.strip()[:40]} is out of range: between {_show(minimum_us)} and {_show(maximum_us)}",
        )
    micros = round(scaled)
    if not minimum_us <= micros <= maximum_us:
        raise InvalidParameterError(
            name, f"{value.strip()[:40]} is out of range: between {_show(minimum_us)} and {_show(maximum_us)}"
        )
    return micros


def _show(micros: int) -> str:
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000)):
        if micros >= size and micros % size == 0:
            return f"{micros // size}{unit}"
    return f"{micros / 1000:g}ms"


def parse_order(value: str | None) -> Order:
    """'asc' (oldest first) or 'desc' (newest first); 'oldest'/'newest' are accepted too.

    Raises:
        InvalidParameterError: any other value.
    """
    text = (value or "asc").strip().lower()
    if text in ("asc", "oldest"):
        return "asc"
    if text in ("desc", "newest"):
        return "desc"
    raise InvalidParameterError("order", f"{text[:20]!r} is not an order; use asc (oldest first) or desc")


def parse_timezone(value: str, name: str = "tz") -> str:
    """An IANA time-zone name ('Australia/Sydney', 'UTC').

    Raises:
        InvalidParameterError: the zone is unknown.
    """
    text = value.strip()
    if not re.match(r"^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$", text):
        raise InvalidParameterError(name, f"{text[:40]!r} is not a time-zone name (e.g. Australia/Sydney)")
    if text not in _duckdb_zones():
        raise InvalidParameterError(name, f"unknown time zone {text!r} (e.g. Australia/Sydney, UTC)")
    return text


@cache
def _duckdb_zones() -> frozenset[str]:
    """Zones DuckDB can convert with (Python's tz database knows a few it cannot: 'posixrules')."""
    import duckdb

    with duckdb.connect() as con:
        return frozenset(row[0] for row in con.execute("SELECT name FROM pg_timezone_names()").fetchall())


def exchange_timezone(exchange: str) -> str:
    """The exchange's local time zone (UTC for exchanges K2 does not know)."""
    return EXCHANGE_TIMEZONES.get(exchange, "UTC")


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class TimeRange:
    """A half-open window [start, end) of exchange time, both aware UTC datetimes."""

    start: datetime
    end: datetime

    @classmethod
    def parse(
        cls, start: str | datetime | None, end: str | datetime | None, *, max_days: float | None
    ) -> TimeRange:
        """Validate a window: both ends given, start before end, no longer than ``max_days``.

        Raises:
            InvalidParameterError: a time is missing or malformed, or end is not after start.
            CapExceededError: the window is longer than the cap.
        """
        if start is None or (isinstance(start, str) and not start.strip()):
            raise InvalidParameterError("start", "is required (ISO 8601, e.g. 2014-03-10T23:00:00Z)")
        if end is None or (isinstance(end, str) and not end.strip()):
            raise InvalidParameterError("end", "is required (ISO 8601, e.g. 2014-03-11T05:00:00Z)")
        window = cls(parse_time(start, "start"), parse_time(end, "end"))
        if window.end <= window.start:
            raise InvalidParameterError(
                "end", f"{window.end.isoformat()} is not after start {window.start.isoformat()}"
            )
        if max_days is not None and window.end - window.start > timedelta(days=max_days):
            days = (window.end - window.start).total_seconds() / 86_400
            raise CapExceededError(
                f"the time range is {days:.2f} days; at most {max_days:g} days per query "
                "(api.max_range_days): split the request",
                cap="api.max_range_days",
                limit=max_days,
                requested=days,
            )
        return window

    @property
    def start_us(self) -> int:
        return epoch_us(self.start)

    @property
    def end_us(self) -> int:
        return epoch_us(self.end)


@dataclass(frozen=True)
class TimeTravel:
    """Which state of the tables to read: the current one, a snapshot id or a moment.

    A snapshot id belongs to one table; a query over two tables (trades with quotes) reads the
    second table as of the first one's commit time, i.e. what the platform knew then.
    """

    snapshot_id: int | None = None
    as_of: datetime | None = None

    @classmethod
    def parse(cls, snapshot_id: int | str | None, as_of: str | datetime | None) -> TimeTravel:
        """Raises:
        InvalidParameterError: both are given, or the snapshot id is not an integer.
        """
        if snapshot_id is not None and as_of is not None:
            raise InvalidParameterError("snapshot_id", "give either snapshot_id or as_of, not both")
        sid: int | None = None
        if snapshot_id is not None:
            try:
                sid = int(snapshot_id)
            except (TypeError, ValueError) as exc:
                raise InvalidParameterError(
                    "snapshot_id", f"{str(snapshot_id)[:30]!r} is not an integer"
                ) from exc
        return cls(sid, parse_time(as_of, "as_of") if as_of is not None else None)

    @property
    def current(self) -> bool:
        return self.snapshot_id is None and self.as_of is None
