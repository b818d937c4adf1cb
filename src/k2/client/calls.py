"""The routes as calls: a path and its query parameters, built once for the sync and async clients.

Each function mirrors one route of the REST API (docs/query.md) and takes the same parameters,
with Python types: a symbol list or a comma-separated string, ``datetime`` or ISO 8601 strings.
History calls take time travel (``snapshot_id=`` or ``as_of=``); the live ones (``recent``,
``stream``) read the newest data by definition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["Call", "Symbols", "Time", "bars", "gaps", "latest", "quotes", "recent", "replay", "snapshots",
           "stream", "symbol_stats", "trades", "trades_with_quotes"]  # fmt: skip

Symbols = str | Iterable[str]
Time = str | datetime


@dataclass(frozen=True)
class Call:
    path: str
    params: dict[str, str] = field(default_factory=dict)

    def page(self, cursor: str) -> Call:
        """The same call, continued after a page's cursor."""
        return Call(self.path, {**self.params, "cursor": cursor})


def _params(**values: object) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            out[name] = value.isoformat()
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[name] = str(value)
        else:  # an iterable of symbols or kinds
            out[name] = ",".join(str(v) for v in value)  # type: ignore[attr-defined]
    return out


def trades(symbols: Symbols, start: Time | None, end: Time | None, order: str, limit: int | None,
           snapshot_id: int | None, as_of: Time | None) -> Call:  # fmt: skip
    return Call("/v1/trades", _params(symbols=symbols, start=start, end=end, order=order, limit=limit,
                                      snapshot_id=snapshot_id, as_of=as_of, format="arrow"))  # fmt: skip


def quotes(symbols: Symbols, start: Time | None, end: Time | None, order: str, limit: int | None,
           snapshot_id: int | None, as_of: Time | None) -> Call:  # fmt: skip
    return Call("/v1/quotes", trades(symbols, start, end, order, limit, snapshot_id, as_of).params)


def bars(symbols: Symbols, start: Time | None, end: Time | None, interval: str | None, tz: str | None,
         snapshot_id: int | None, as_of: Time | None) -> Call:  # fmt: skip
    return Call("/v1/bars", _params(symbols=symbols, start=start, end=end, interval=interval, tz=tz,
                                    snapshot_id=snapshot_id, as_of=as_of, format="arrow"))  # fmt: skip


def trades_with_quotes(symbols: Symbols, start: Time | None, end: Time | None, tolerance: str | None,
                       snapshot_id: int | None, as_of: Time | None) -> Call:  # fmt: skip
    return Call("/v1/trades-with-quotes", _params(symbols=symbols, start=start, end=end, tolerance=tolerance,
                                                  snapshot_id=snapshot_id, as_of=as_of, format="arrow"))  # fmt: skip


def latest(symbols: Symbols, snapshot_id: int | None, as_of: Time | None) -> Call:
    return Call("/v1/latest", _params(symbols=symbols, snapshot_id=snapshot_id, as_of=as_of, format="arrow"))


def snapshots(table: str, limit: int | None) -> Call:
    return Call("/v1/snapshots", _params(table=table, limit=limit, format="arrow"))


def symbol_stats(symbols: Symbols | None, start: Time | None, end: Time | None, snapshot_id: int | None,
                 as_of: Time | None) -> Call:  # fmt: skip
    return Call("/v1/symbols", _params(symbols=symbols, start=start, end=end, snapshot_id=snapshot_id,
                                       as_of=as_of, format="arrow"))  # fmt: skip


def gaps(symbols: Symbols | None, start: Time | None, end: Time | None, kind: str | None, status: str | None,
         snapshot_id: int | None, as_of: Time | None) -> Call:  # fmt: skip
    return Call("/v1/gaps", _params(symbols=symbols, start=start, end=end, kind=kind, status=status,
                                    snapshot_id=snapshot_id, as_of=as_of, format="arrow"))  # fmt: skip


def recent(
    kind: str, symbol: str, minutes: float | None, until: Time | None, consistency: str | None
) -> Call:
    if kind not in ("trades", "quotes", "bars"):
        raise ValueError(f"kind must be trades, quotes or bars, not {kind!r}")
    path = "/v1/bars/live" if kind == "bars" else f"/v1/{kind}/recent"
    return Call(path, _params(symbol=symbol, minutes=minutes, until=until, consistency=consistency,
                              format="arrow"))  # fmt: skip


def replay(start: Time, end: Time, symbols: Symbols | None, kinds: Symbols, speed: float | None,
           snapshot_id: int | None, as_of: Time | None) -> Call:  # fmt: skip
    return Call("/v1/replay", _params(start=start, end=end, symbols=symbols, kinds=kinds, speed=speed,
                                      stream="ndjson", snapshot_id=snapshot_id, as_of=as_of))  # fmt: skip


def stream(symbols: Symbols, kinds: Symbols, bars: bool, duration: float | None) -> Call:
    return Call("/v1/stream", _params(symbols=symbols, kinds=kinds, bars=bars, duration=duration))
