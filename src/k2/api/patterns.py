"""Regular expressions for the API's text parameters: the OpenAPI schema states exactly what is accepted.

Each pattern is a subset of what ``k2.query.params`` accepts, and FastAPI enforces it (422 when a
value does not match), so every value the schema allows passes K2's own parsing and every value it
forbids is refused: the schema and the server agree. Ranges are part of the patterns (a duration
between 1 s and 1 d, a date that exists, a time within 1971-2199), because a bound that only
K2's parser knew would turn a schema-valid request into a 400.

The patterns use ``[0-9]`` and spaces, never ``\\d`` or ``\\s``: those match other Unicode digits
and spaces in Python (which generates test data) and in Rust (which validates), differently.
"""

from __future__ import annotations

__all__ = ["DATE", "DATE_TIME", "MEANINGS", "SYMBOLS", "duration", "meaning", "up_to"]

_SYMBOL = "[A-Za-z0-9][A-Za-z0-9._-]{0,15}"


def up_to(n: int) -> str:
    """A regex (no anchors) for the decimal integers 1..n, without leading zeros."""
    digits = str(n)
    parts = []
    if len(digits) > 1:  # the shorter numbers: 1 .. 10**(len-1) - 1
        parts.append("[1-9]" + (f"[0-9]{{0,{len(digits) - 2}}}" if len(digits) > 2 else ""))
    for i, digit in enumerate(digits):  # same length: n's first i digits, then a smaller digit
        low, top = (1 if i == 0 else 0), int(digit) - 1
        if top >= low:
            rest = len(digits) - i - 1
            smaller = str(low) if top == low else f"[{low}-{top}]"
            parts.append(
                digits[:i] + smaller + ("[0-9]" if rest == 1 else f"[0-9]{{{rest}}}" if rest else "")
            )
    parts.append(digits)
    return "(?:" + "|".join(parts) + ")"


#: What each pattern means, for the 422 message (the regex itself would be no help to a caller).
MEANINGS: dict[str, str] = {}
_UNITS_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}


def duration(minimum_us: int, maximum_us: int) -> str:
    """Whole numbers of one unit (us, ms, s, m, h, d) between the bounds, e.g. ``15m``.

    Only units of at least ``minimum_us`` are offered, so that every count from 1 up is in range
    (1 s … 1 d: s, m, h, d; not ``1500ms``).
    """
    units = {unit: size for unit, size in _UNITS_US.items() if minimum_us <= size <= maximum_us}
    pattern = "^(?:" + "|".join(up_to(maximum_us // size) + unit for unit, size in units.items()) + ")$"
    top = max(units, key=lambda u: units[u])
    MEANINGS[pattern] = (
        f"a whole number and a unit ({', '.join(units)}), from 1{min(units, key=lambda u: units[u])} "
        f"to {maximum_us // units[top]}{top} (e.g. 1m, 15m, 1h)"
    )
    return pattern


def _leap_years(first: int, last: int) -> str:
    years = [y for y in range(first, last + 1) if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)]
    decades: dict[str, list[str]] = {}
    for year in years:
        decades.setdefault(str(year)[:3], []).append(str(year)[3])
    return "(?:" + "|".join(f"{d}[{''.join(ends)}]" for d, ends in decades.items()) + ")"


_YEAR = "(?:197[1-9]|19[89][0-9]|20[0-9]{2}|21[0-9]{2})"
_MONTH_DAY = (
    "(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"  # every month has 1..28
    "|(?:0[13-9]|1[0-2])-(?:29|30)"  # all but February have 29 and 30
    "|(?:0[13578]|1[02])-31)"
)
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_leap_years(1971, 2199)}-02-29)"
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]{1,6})?)?"
_OFFSET = "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"

#: A calendar date (a trading session), YYYY-MM-DD, 1971-2199.
DATE = f"^{_DATE}$"
#: An ISO 8601 date or date-time, 1971-2199; without an offset it is UTC.
DATE_TIME = f"^{_DATE}(?:T{_TIME}{_OFFSET}?)?$"
#: 1 to 100 comma-separated symbols (either case; spaces around them are ignored).
SYMBOLS = f"^ *{_SYMBOL} *(?:, *{_SYMBOL} *){{0,99}}$"

MEANINGS[DATE] = "a date YYYY-MM-DD that exists, 1971-2199 (e.g. 2014-03-11)"
MEANINGS[DATE_TIME] = (
    "an ISO 8601 date or time, 1971-2199: YYYY-MM-DD[THH:MM[:SS[.ffffff]]][Z|±HH:MM] (e.g. 2014-03-10T23:15:00Z)"
)
MEANINGS[SYMBOLS] = (
    "1 to 100 comma-separated symbols of 1-16 characters: a letter or digit, then letters, digits, "
    "'.', '-' or '_' (e.g. BHP,RIO)"
)


def meaning(pattern: str) -> str | None:
    """What ``pattern`` accepts, in words, or None for a pattern not made here."""
    return MEANINGS.get(pattern)
