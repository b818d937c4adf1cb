"""The clean market behind the simulator: arrivals, prices, quotes and trades, before any fault.

Model, per symbol ``s`` (all draws from one ``numpy.random.Generator``, chunk by chunk, vectorised):

- **Arrivals**: a Poisson process whose intensity is piecewise constant on 1-second bins:
  ``rate_s * u(x) * burst``. ``u(x) = (1 + a(2x-1)^2) / (1 + a/3)`` over the session fraction ``x``
  has mean 1 and is ``1 + a`` times higher at the open and close than at midday (the intraday U).
  Bursts start at ``burst_per_hour`` per symbol, last an exponential time and multiply the rate.
  Counts per bin are Poisson; times are uniform inside the bin, rounded to microseconds, then
  nudged so that one symbol's ticks have strictly increasing exchange times.
- **Prices**: a driftless geometric random walk of the mid, with per-symbol daily volatility,
  stepped at every event by ``vol * sqrt(dt / session)``; quotes round it onto the symbol's tick
  grid with a spread of 1-4 ticks. A trade prints at the *prevailing* (last published) quote's
  bid or ask, or strictly inside it, so every trade is at or inside the book it met.
- **Sessions**: the SIM exchange trades ``open_time``-``close_time`` on business days from
  ``start``; its local time is UTC, so a session is the UTC date of the trading day. A *session
  reset* (the fault ``reset_rate``, a probability per tick, drawn from its own generator so that
  prices and times do not depend on it) moves
  one symbol to the next trading date mid-day; both its kinds restart at sequence 1. A reset
  never empties a session: it is never the symbol's first event of the day nor right after another.

The first event of every symbol is a quote, so no trade meets an empty book.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from datetime import date, time
from typing import Literal

import numpy as np
import polars as pl

from k2.feeds.errors import FeedConfigError
from k2.types import TICK_KINDS

__all__ = ["CleanChunk", "MarketConfig", "MarketModel", "ResetEvent", "SymbolSpec", "symbol_names"]

_KINDS = TICK_KINDS
_BIG = np.int64(1) << np.int64(42)  # > any microsecond offset in a day: separates symbols in a cummax


#: 3-4 letter tickers: 474,552 exist. Drawn at random up to this many (the draw slows as the space
#: fills, and could never reach a million); the rest are distinct 5-letter codes.
_SHORT_NAMES = 200_000


def symbol_names(count: int, seed: int) -> tuple[str, ...]:
    """``count`` distinct tickers, the same for the same seed: 3-4 letters for the first 200,000,
    5 letters beyond (an options-like universe of up to 11.8 M)."""
    if count > 26**5 + _SHORT_NAMES:
        raise FeedConfigError("too many symbols to name", option="symbols", value=count)
    rng = np.random.default_rng([seed, 0x5E4])
    letters = np.array(list(string.ascii_uppercase))
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < min(count, _SHORT_NAMES):
        word = "".join(letters[rng.integers(0, 26, int(rng.integers(3, 5)))])
        if word not in seen:
            seen.add(word)
            names.append(word)
    if count > _SHORT_NAMES:
        codes = rng.choice(26**5, size=count - _SHORT_NAMES, replace=False)
        digits = (codes[:, None] // 26 ** np.arange(4, -1, -1)) % 26
        names += np.ascontiguousarray(letters[digits]).view("<U5").ravel().tolist()
    return tuple(names)


@dataclass(frozen=True)
class MarketConfig:
    """What the simulated market looks like; defaults give a lively but plausible exchange."""

    symbols: tuple[str, ...]
    start: date = date(2024, 1, 2)
    open_time: time = time(10, 0)
    close_time: time = time(16, 0)
    rate_per_symbol: float = 2.0
    #: "lognormal": activity spread within ~x5 either way; "zipf": a few busy symbols, most quiet
    #: (weight ∝ 1 / rank ** zipf_exponent over a random ranking), as on a real exchange
    liquidity: Literal["lognormal", "zipf"] = "lognormal"
    zipf_exponent: float = 1.1
    trade_fraction: float = 0.4
    u_shape: float = 3.0
    burst_per_hour: float = 2.0
    burst_mean_s: float = 15.0
    burst_multiplier: float = 5.0
    chunk_ticks: int = 50_000

    def __post_init__(self) -> None:
        if not self.symbols or len(set(self.symbols)) != len(self.symbols):
            raise FeedConfigError(
                "need at least one symbol, all distinct", option="symbols", value=self.symbols
            )
        checks = {
            "rate_per_symbol": self.rate_per_symbol > 0,
            "zipf_exponent": self.zipf_exponent > 0,
            "trade_fraction": 0 <= self.trade_fraction < 1,
            "u_shape": self.u_shape >= 0,
            "burst_per_hour": self.burst_per_hour >= 0,
            "burst_mean_s": self.burst_mean_s > 0,
            "burst_multiplier": self.burst_multiplier >= 1,
            "chunk_ticks": self.chunk_ticks >= 100,
            "close_time": self.close_time > self.open_time,
        }
        for name, ok in checks.items():
            if not ok:
                raise FeedConfigError("out of range", option=name, value=getattr(self, name))

    @property
    def session_seconds(self) -> int:
        open_s = self.open_time.hour * 3600 + self.open_time.minute * 60 + self.open_time.second
        close_s = self.close_time.hour * 3600 + self.close_time.minute * 60 + self.close_time.second
        return close_s - open_s


@dataclass(frozen=True)
class SymbolSpec:
    """One simulated instrument: its starting price, tick size, volatility and activity."""

    name: str
    price0: float
    tick_micros: int
    daily_vol: float
    rate: float


@dataclass(frozen=True)
class ResetEvent:
    """A session reset: ``symbol`` moved from session index ``from_index`` to ``from_index + 1``."""

    symbol: str
    from_index: int
    exchange_us: int  # exchange time of the first tick of the new session


@dataclass
class CleanChunk:
    """One chunk of the clean stream, both kinds, in exchange-time order.

    ``events`` columns: ``_pos`` (global clean position), ``_kind`` (0 trades, 1 quotes), ``_sym``,
    ``_sess`` (session index from ``start``), ``sequence``, ``exchange_us``, ``price`` / ``bid`` /
    ``ask`` in micro-units, ``size`` / ``bid_size`` / ``ask_size`` in whole units.
    """

    events: pl.DataFrame
    resets: list[ResetEvent] = field(default_factory=list)


def _tick_micros(price: float) -> int:
    """ASX-like tick tiers: 1c at or above $2, half a cent above 10c, a tenth of a cent below."""
    return 10_000 if price >= 2.0 else 5_000 if price >= 0.1 else 1_000


def _segment_cummax(values: np.ndarray, sym: np.ndarray) -> np.ndarray:
    """Running maximum restarting at each symbol (``sym`` sorted ascending)."""
    offset = sym.astype(np.int64) * _BIG
    result: np.ndarray = np.maximum.accumulate(values + offset) - offset
    return result


class MarketModel:
    """Generates the clean stream chunk by chunk; all state needed to continue is kept here."""

    def __init__(
        self,
        config: MarketConfig,
        rng: np.random.Generator,
        reset_rng: np.random.Generator,
        reset_rate: float = 0.0,
    ) -> None:
        self.config = config
        self.reset_rate = reset_rate
        self._rng = rng
        self._reset_rng = reset_rng
        n = len(config.symbols)
        price0 = np.exp(rng.uniform(math.log(0.5), math.log(150.0), n))
        weight = rng.lognormal(0.0, 0.8, n)
        vol = rng.uniform(0.01, 0.035, n)
        if config.liquidity == "zipf":  # drawn after the defaults, so a lognormal run is unchanged
            rank = rng.permutation(n) + 1.0
            weight = np.power(rank, -config.zipf_exponent, dtype=np.float64)
        rates = config.rate_per_symbol * weight / weight.mean()
        self.specs = tuple(
            SymbolSpec(name, float(p), _tick_micros(float(p)), float(v), float(r))
            for name, p, v, r in zip(config.symbols, price0, vol, rates, strict=True)
        )
        self._tick = np.array([s.tick_micros for s in self.specs], dtype=np.int64)
        self._vol = vol
        self._rates = rates
        self._start = np.busday_offset(np.datetime64(config.start, "D"), 0, roll="forward")
        self._open_us = (config.open_time.hour * 3600 + config.open_time.minute * 60) * 1_000_000
        # carried state
        self._day = 0
        self._t = 0  # seconds since the open of the current day
        self._pos = 0
        self._done = False
        self._log_mid = np.log(price0)
        self._last_off = np.full(n, -1, dtype=np.int64)
        self._last_bid = np.full(n, -1, dtype=np.int64)
        self._last_ask = np.full(n, -1, dtype=np.int64)
        self._has_quote = np.zeros(n, dtype=bool)
        self._resets = np.zeros(n, dtype=np.int64)
        self._last_reset_raw = np.zeros(n, dtype=bool)
        self._events_today = np.zeros(n, dtype=np.int64)
        self._burst_until = np.zeros(n, dtype=np.float64)
        self._seq_sess = np.full((2, n), -1, dtype=np.int64)
        self._seq_last = np.zeros((2, n), dtype=np.int64)

    @property
    def elapsed_s(self) -> int:
        """Trading seconds simulated so far (the exchange clock while the market is open)."""
        return self._day * self.config.session_seconds + self._t

    def session_dates(self, index: np.ndarray) -> np.ndarray:
        """Trading dates (``datetime64[D]``) of session indexes counted from ``start``."""
        return np.busday_offset(self._start, index.astype(np.int64), roll="forward")

    def next_chunk(self, limit: int | None = None, until_s: int | None = None) -> CleanChunk | None:
        """The next chunk of at most ``limit`` ticks, ending by trading second ``until_s``; None when done.

        A chunk never spans two trading days. Truncating a chunk to ``limit`` ends the stream.
        """
        cfg = self.config
        length = cfg.session_seconds
        if self._done or limit == 0:
            return None
        if self._t >= length:
            self._new_day()
        # aim at chunk_ticks: the U makes the open twice as busy as the day's mean
        x = self._t / length
        u_now = (1.0 + cfg.u_shape * (2.0 * x - 1.0) ** 2) / (1.0 + cfg.u_shape / 3.0)
        width = max(1, math.ceil(cfg.chunk_ticks / float(self._rates.sum() * u_now)))
        width = min(width, length - self._t)
        if until_s is not None:
            width = min(width, until_s - self.elapsed_s)
            if width <= 0:
                return None
        chunk = self._generate(width, limit)
        self._t += width
        return chunk

    def _new_day(self) -> None:
        self._day += 1
        self._t = 0
        self._last_off[:] = -1
        self._events_today[:] = 0
        self._last_reset_raw[:] = False
        self._burst_until[:] = 0.0

    def _generate(self, width: int, limit: int | None) -> CleanChunk:
        cfg, rng, n = self.config, self._rng, len(self.specs)
        length = cfg.session_seconds
        bins = np.arange(width, dtype=np.float64)
        x = (self._t + bins + 0.5) / length
        u = (1.0 + cfg.u_shape * (2.0 * x - 1.0) ** 2) / (1.0 + cfg.u_shape / 3.0)
        starts = rng.random((n, width)) < cfg.burst_per_hour / 3600.0
        ends = np.where(starts, bins + rng.exponential(cfg.burst_mean_s, (n, width)), -np.inf)
        run = np.maximum(np.maximum.accumulate(ends, axis=1), (self._burst_until - self._t)[:, None])
        in_burst = run > bins
        self._burst_until = self._t + run[:, -1]
        lam = self._rates[:, None] * u[None, :] * np.where(in_burst, cfg.burst_multiplier, 1.0)
        counts = rng.poisson(lam)
        flat = np.repeat(np.arange(n * width), counts.ravel())
        sym = flat // width
        total = len(flat)
        off = ((self._t + flat % width + rng.random(total)) * 1e6).astype(np.int64)
        order = np.lexsort((off, sym))
        off, sym = off[order], sym[order]
        per_sym = counts.sum(axis=1)
        first = np.cumsum(per_sym) - per_sym
        k = np.arange(total) - first[sym]
        # strictly increasing exchange times per symbol (ties would make "prevailing quote" ambiguous)
        floor_ = np.maximum(off - k, self._last_off[sym] + 1)
        off = _segment_cummax(floor_, sym) + k
        prev_off = np.where(k == 0, np.maximum(self._last_off[sym], 0), np.roll(off, 1))

        r_kind, z = rng.random(total), rng.standard_normal(total)
        spread = np.minimum(rng.geometric(0.6, total), 4).astype(np.int64)
        r_side, r_inside, r_where = rng.random(total), rng.random(total), rng.random(total)
        trade_size = np.maximum(1, np.rint(rng.lognormal(5.0, 1.2, total))).astype(np.int64)
        bid_size = np.maximum(1, np.rint(rng.lognormal(7.0, 1.0, total))).astype(np.int64)
        ask_size = np.maximum(1, np.rint(rng.lognormal(7.0, 1.0, total))).astype(np.int64)
        r_reset = self._reset_rng.random(total)

        is_trade = (r_kind < cfg.trade_fraction) & ~((k == 0) & ~self._has_quote[sym])
        inc = self._vol[sym] * np.sqrt((off - prev_off) / 1e6 / length) * z
        csum = np.cumsum(inc)
        base = np.zeros(n)
        active = per_sym > 0
        base[active] = csum[first[active]] - inc[first[active]]
        log_mid = self._log_mid[sym] + csum - base[sym]
        mid_ticks = np.exp(log_mid) * 1e6 / self._tick[sym]
        bid = np.maximum(np.rint(mid_ticks - spread / 2.0), 1).astype(np.int64)
        ask = bid + spread
        qidx = np.maximum.accumulate(np.where(is_trade, -1, np.arange(total)))
        seen = qidx >= first[sym]
        pbid = np.where(seen, bid[np.maximum(qidx, 0)], self._last_bid[sym])
        pask = np.where(seen, ask[np.maximum(qidx, 0)], self._last_ask[sym])
        width_ticks = pask - pbid
        inside = (width_ticks > 1) & (r_inside < 0.15)
        price = np.where(
            inside,
            pbid + 1 + np.floor(r_where * (width_ticks - 1)).astype(np.int64),
            np.where(r_side < 0.5, pask, pbid),
        )

        raw_reset = r_reset < self.reset_rate
        prev_raw = np.where(k == 0, self._last_reset_raw[sym], np.roll(raw_reset, 1))
        first_today = (k == 0) & (self._events_today[sym] == 0)
        reset = raw_reset & ~first_today & ~prev_raw
        rc = np.cumsum(reset)
        rbase = np.zeros(n, dtype=np.int64)
        rbase[active] = rc[first[active]] - reset[first[active]]
        resets_cum = self._resets[sym] + rc - rbase[sym]

        # carry state from each symbol's last event
        last = (first + per_sym - 1)[active]
        self._last_off[active] = off[last]
        self._log_mid[active] = log_mid[last]
        qsel = seen[last]
        quoted_syms = np.flatnonzero(active)[qsel]
        self._last_bid[quoted_syms] = bid[qidx[last][qsel]]
        self._last_ask[quoted_syms] = ask[qidx[last][qsel]]
        self._has_quote[quoted_syms] = True
        self._resets[active] = resets_cum[last]
        self._last_reset_raw[active] = raw_reset[last]
        self._events_today += per_sym

        return self._assemble(
            sym, off, is_trade, price, bid, ask, trade_size, bid_size, ask_size, resets_cum, reset, limit
        )

    def _assemble(
        self,
        sym: np.ndarray,
        off: np.ndarray,
        is_trade: np.ndarray,
        price: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        trade_size: np.ndarray,
        bid_size: np.ndarray,
        ask_size: np.ndarray,
        resets_cum: np.ndarray,
        reset: np.ndarray,
        limit: int | None,
    ) -> CleanChunk:
        """Order by exchange time, truncate to ``limit``, and number each (kind, symbol, session)."""
        order = np.lexsort((sym, off))
        if limit is not None and len(order) > limit:
            order = order[:limit]
            self._done = True  # the carried state now describes ticks that were cut: stop here
        trading_day = self.session_dates(np.array([self._day]))[0]
        day_us = int(trading_day.astype("datetime64[us]").astype(np.int64)) + self._open_us
        tick = self._tick[sym[order]]
        frame = pl.DataFrame(
            {
                "_pos": np.arange(self._pos, self._pos + len(order), dtype=np.int64),
                "_kind": np.where(is_trade[order], 0, 1).astype(np.int8),
                "_sym": sym[order].astype(np.int32),
                "_sess": (self._day + resets_cum[order]).astype(np.int32),
                "exchange_us": off[order] + day_us,
                "price": price[order] * tick,
                "bid": bid[order] * tick,
                "ask": ask[order] * tick,
                "size": trade_size[order],
                "bid_size": bid_size[order],
                "ask_size": ask_size[order],
                "_reset": reset[order],
            }
        )
        self._pos += len(order)
        frame = frame.with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int64).over("_kind", "_sym", "_sess") + 1).alias("sequence")
        )
        kind, s, sess = (frame[c].to_numpy() for c in ("_kind", "_sym", "_sess"))
        carried = np.where(sess == self._seq_sess[kind, s], self._seq_last[kind, s], 0)
        frame = frame.with_columns(pl.col("sequence") + pl.Series(carried, dtype=pl.Int64))
        tail = frame.group_by("_kind", "_sym").agg(pl.col("_sess").last(), pl.col("sequence").last())
        tk, ts = tail["_kind"].to_numpy(), tail["_sym"].to_numpy()
        self._seq_sess[tk, ts] = tail["_sess"].to_numpy()
        self._seq_last[tk, ts] = tail["sequence"].to_numpy()
        resets = [
            ResetEvent(self.specs[int(r["_sym"])].name, int(r["_sess"]) - 1, int(r["exchange_us"]))
            for r in frame.filter(pl.col("_reset"))
            .select("_sym", "_sess", "exchange_us")
            .iter_rows(named=True)
        ]
        return CleanChunk(frame.drop("_reset"), resets)
