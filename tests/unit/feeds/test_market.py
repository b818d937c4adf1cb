"""The clean market: prices on the grid, trades inside the book, an intraday U, orderly sequences."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from k2.feeds.errors import FeedConfigError
from k2.feeds.faults import FaultConfig
from k2.feeds.market import MarketConfig, MarketModel, symbol_names
from k2.feeds.simulator import Simulator, SimulatorConfig
from tests.unit.feeds.conftest import Run


@pytest.fixture(scope="module")
def day() -> Run:
    """One full trading day of 8 quiet symbols (about 60 K ticks)."""
    market = MarketConfig(symbols=symbol_names(8, 3), rate_per_symbol=0.35, start=date(2024, 3, 1))
    sim = Simulator(SimulatorConfig(market, FaultConfig(), seed=3))
    deliveries = list(sim.deliveries(seconds=market.session_seconds))
    return Run(sim, deliveries, sim.truth.to_dict())


def _micros(column: str) -> pl.Expr:
    return (pl.col(column).cast(pl.Float64) * 1e6).round().cast(pl.Int64)


def test_prices_sit_on_each_symbols_tick_grid(day: Run) -> None:
    ticks = pl.DataFrame(
        {
            "symbol": [s.name for s in day.sim.market.specs],
            "tick": [s.tick_micros for s in day.sim.market.specs],
        }
    )
    trades = day.frame("trades").join(ticks, on="symbol")
    quotes = day.frame("quotes").join(ticks, on="symbol")
    assert (trades.select(_micros("price") % pl.col("tick") == 0).to_series()).all()
    for col in ("bid_price", "ask_price"):
        assert (quotes.select(_micros(col) % pl.col("tick") == 0).to_series()).all()
    assert (quotes["ask_price"] > quotes["bid_price"]).all()
    assert (trades["size"] > 0).all() and (quotes["bid_size"] > 0).all()


def test_every_trade_is_at_or_inside_the_prevailing_quote(day: Run) -> None:
    quotes = day.frame("quotes").select("symbol", "exchange_ts", "bid_price", "ask_price").sort("exchange_ts")
    trades = day.frame("trades").select("symbol", "exchange_ts", "price").sort("exchange_ts")
    joined = trades.join_asof(
        quotes, on="exchange_ts", by="symbol", strategy="backward", check_sortedness=False
    )
    assert joined["bid_price"].null_count() == 0  # a symbol's first event is always a quote
    assert ((joined["price"] >= joined["bid_price"]) & (joined["price"] <= joined["ask_price"])).all()
    inside = ((joined["price"] > joined["bid_price"]) & (joined["price"] < joined["ask_price"])).sum()
    assert 0 < inside < joined.height  # mostly at the touch, sometimes inside a wide spread


def test_arrivals_follow_an_intraday_u(day: Run) -> None:
    times = pl.concat([day.frame(k).select("exchange_ts") for k in ("trades", "quotes")])
    hours = times.group_by(pl.col("exchange_ts").dt.hour().alias("h")).len().sort("h")["len"].to_list()
    assert len(hours) == 6  # 10:00-16:00 UTC, nothing outside the session
    first, middle, last = hours[0], (hours[2] + hours[3]) / 2, hours[-1]
    assert first > 1.8 * middle and last > 1.8 * middle


def test_exchange_time_advances_and_sequences_are_contiguous(day: Run) -> None:
    for kind in ("trades", "quotes"):
        frame = day.frame(kind)
        per = frame.group_by("symbol", "session").agg(
            pl.col("exchange_ts").diff().min().alias("step"),
            pl.col("sequence").diff().max().alias("jump"),
            pl.col("sequence").min().alias("first"),
            pl.len(),
            pl.col("sequence").max().alias("last"),
        )
        assert per["step"].min() > timedelta(0)
        assert (per["jump"] == 1).all() and (per["first"] == 1).all() and (per["len"] == per["last"]).all()
    # one symbol never has two ticks at the same microsecond, whatever their kinds
    merged = pl.concat([day.frame(k).select("symbol", "exchange_ts") for k in ("trades", "quotes")])
    assert merged.is_unique().all()
    assert merged["exchange_ts"].min().date() == date(2024, 3, 1)


def test_delivery_interleaves_symbols_by_exchange_time(day: Run) -> None:
    for delivery in day.deliveries:
        times = np.concatenate(
            [delivery.trades["exchange_ts"].dt.epoch("us"), delivery.quotes["exchange_ts"].dt.epoch("us")]
        )
        codes = np.concatenate([np.zeros(delivery.trades.height), np.ones(delivery.quotes.height)])
        # walk the order: the n-th trade/quote code takes the next row of that kind
        idx = np.zeros(2, dtype=np.int64)
        merged = []
        offsets = (0, delivery.trades.height)
        for code in delivery.order:
            merged.append(times[offsets[code] + idx[code]])
            idx[code] += 1
        assert np.all(np.diff(merged) >= 0)
        assert len(codes) == len(delivery)


def test_count_and_seconds_bound_the_stream() -> None:
    market = MarketConfig(symbols=("AAA", "BBB"), chunk_ticks=500)
    sim = Simulator(SimulatorConfig(market, seed=1))
    assert sum(len(d) for d in sim.deliveries(count=1_234)) == 1_234
    model = MarketModel(market, np.random.default_rng(1), np.random.default_rng(2))
    chunks = []
    while (chunk := model.next_chunk(until_s=600)) is not None:
        chunks.append(chunk)
    assert model.elapsed_s == 600
    last = max(c.events["exchange_us"].max() for c in chunks)
    assert last < (np.datetime64("2024-01-02T10:10:00", "us").astype(np.int64))


def test_sessions_roll_over_business_days() -> None:
    market = MarketConfig(symbols=("AAA",), start=date(2024, 1, 5), rate_per_symbol=0.05)  # a Friday
    sim = Simulator(SimulatorConfig(market, seed=2))
    frames = list(sim.deliveries(seconds=2 * market.session_seconds))
    sessions = sorted(set(pl.concat([d.quotes for d in frames])["session"].to_list()))
    assert sessions == [date(2024, 1, 5), date(2024, 1, 8)]  # Monday after the weekend


@pytest.mark.parametrize(
    "kwargs", [{"symbols": ()}, {"symbols": ("A", "A")}, {"symbols": ("A",), "trade_fraction": 1.0}]
)
def test_bad_market_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(FeedConfigError):
        MarketConfig(**kwargs)  # type: ignore[arg-type]


def test_symbol_names_are_distinct_and_seeded() -> None:
    names = symbol_names(300, 5)
    assert len(set(names)) == 300 and names == symbol_names(300, 5) and names != symbol_names(300, 6)
    assert all(3 <= len(n) <= 4 and n.isupper() for n in names)


def test_a_zipf_market_has_a_few_busy_symbols_and_many_quiet_ones() -> None:
    import numpy as np

    from k2.feeds.market import MarketConfig, MarketModel, symbol_names

    names = symbol_names(10_000, 1)
    rng = np.random.default_rng(5)
    model = MarketModel(MarketConfig(symbols=names, liquidity="zipf"), rng, np.random.default_rng(6))
    rates = np.sort(np.array([s.rate for s in model.specs]))[::-1]
    assert abs(rates.mean() - 2.0) < 1e-9  # the same ticks per second in all, spread unevenly
    assert rates[:100].sum() > 0.3 * rates.sum()  # the busiest 1 % trade about a third of the ticks
    assert np.median(rates) < 0.2 * rates.mean()  # the median symbol is quiet


def test_a_million_symbols_get_distinct_names_and_smaller_universes_keep_theirs() -> None:
    """3-4 letters hold 474,552 tickers: a million-symbol feed used to loop for ever drawing them."""
    names = symbol_names(1_000_000, 7)
    assert len(names) == len(set(names)) == 1_000_000
    assert {len(n) for n in names[200_000:]} == {5} and all(3 <= len(n) <= 4 for n in names[:200_000])
    assert symbol_names(250_000, 3)[:50_000] == symbol_names(50_000, 3)  # the same seed, the same feed
