"""Schemathesis hooks for ``make fuzz``: the rules between parameters that OpenAPI cannot state.

The schema states every rule about one parameter (patterns, enums, bounds, which are required),
and the server enforces exactly those. What it cannot state relates two parameters, and each
such rule is written in the parameters' descriptions and answered with a 400 that says why:

* ``snapshot_id`` and ``as_of`` exclude each other;
* a window ends after it starts and spans at most ``api.max_range_days`` (sessions: ``end`` is
  not before ``start``);
* a ``cursor`` is only ever the ``next_cursor`` of the previous page with the same parameters.

So that ``positive_data_acceptance`` holds the server to its schema rather than to rules no
generator can know, ``map_case`` makes each *positive* case obey them (the nearest valid case:
the later time dropped to the earlier one plus at most a day, ``as_of`` dropped in favour of
``snapshot_id``, a made-up cursor dropped). Negative cases are sent as generated. Loaded by
``benchmarks.fuzz`` through ``SCHEMATHESIS_HOOKS``; ``tests/unit/api/test_schemathesis.py``
applies the same function.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import schemathesis

__all__ = ["SESSION_PATHS", "map_case", "obey_cross_rules"]

#: The longest window a repaired case asks for: well under any sensible api.max_range_days.
_SPAN = timedelta(days=1)
_LAST = datetime(2199, 12, 31, 23, 59, 59, tzinfo=UTC)


def _time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("z", "Z"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


#: Operations whose start and end are sessions (inclusive dates), not instants.
SESSION_PATHS = ("/v1/symbols", "/v1/gaps")


def _window(start: str, end: str, *, sessions: bool) -> tuple[str, str]:
    if sessions:  # inclusive dates
        first, last = date.fromisoformat(start), date.fromisoformat(end)
        if first <= last <= first + _SPAN:
            return start, end
        return start, start  # one session: always valid
    first, last = _time(start), _time(end)
    if first < last <= first + _SPAN:
        return start, end
    span = min(abs(last - first), _SPAN) or timedelta(seconds=1)
    if first + span > _LAST:
        first = _LAST - span
    stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
    return first.strftime(stamp), (first + span).strftime(stamp)


def obey_cross_rules(query: dict[str, Any], *, sessions: bool = False) -> dict[str, Any]:
    """``query`` changed as little as possible to obey the rules between K2's parameters."""
    out = dict(query)
    if out.get("snapshot_id") is not None and out.get("as_of") is not None:
        out.pop("as_of")
    out.pop("cursor", None)  # only the server makes cursors (empty means none: kept out as well)
    start, end = out.get("start"), out.get("end")
    if isinstance(start, str) and isinstance(end, str):
        out["start"], out["end"] = _window(start, end, sessions=sessions)
    return out


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Positive cases obey the cross-parameter rules; negative ones are left as generated."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive or not case.query:
        return case
    case.query = obey_cross_rules(case.query, sessions=case.operation.path in SESSION_PATHS)
    return case
