"""Priority tiers: ranked from decaying tick counts per exchange, or taken from explicit lists."""

from __future__ import annotations

import polars as pl

from k2.config.resilience import ExplicitTiers, ResilienceSettings
from k2.resilience.tiers import PriorityTiers
from tests.unit.resilience.conftest import FakeClock

S = ResilienceSettings(tier1_fraction=0.2, tier2_fraction=0.3, tiers_refresh_s=30, volume_half_life_s=60)


def ticks(counts: dict[str, int], exchange: str = "SIM") -> pl.DataFrame:
    symbols = [s for s, n in counts.items() for _ in range(n)]
    return pl.DataFrame({"exchange": [exchange] * len(symbols), "symbol": symbols})


def tiers_by_symbol(tiers: PriorityTiers, exchange: str = "SIM") -> dict[str, int]:
    t = tiers.table.filter(pl.col("exchange") == exchange)
    return dict(zip(t["symbol"].to_list(), t["tier"].to_list(), strict=True))


def test_top_fraction_by_volume_is_tier_one(clock: FakeClock) -> None:
    tiers = PriorityTiers(S, clock)
    # ten symbols with 100, 90, … 10 ticks: top 20% = 2 symbols, next 30% = 3, rest 5
    counts = {f"S{i}": 100 - 10 * i for i in range(10)}
    assert tiers.observe(ticks(counts))
    assert tiers_by_symbol(tiers) == {
        "S0": 1, "S1": 1, "S2": 2, "S3": 2, "S4": 2, "S5": 3, "S6": 3, "S7": 3, "S8": 3, "S9": 3,
    }  # fmt: skip
    assert tiers.counts() == {1: 2, 2: 3, 3: 5}


def test_each_exchange_is_ranked_on_its_own(clock: FakeClock) -> None:
    tiers = PriorityTiers(S, clock)
    frame = pl.concat(
        [ticks({"A": 1000, "B": 900, "C": 800}, "BIG"), ticks({"X": 3, "Y": 2, "Z": 1}, "SMALL")]
    )
    tiers.observe(frame)
    # ceil(3 * 0.2) = 1 symbol in tier 1 per exchange, although SMALL's busiest is tiny next to BIG's
    assert tiers_by_symbol(tiers, "BIG") == {"A": 1, "B": 2, "C": 3}
    assert tiers_by_symbol(tiers, "SMALL") == {"X": 1, "Y": 2, "Z": 3}


def test_ties_are_broken_by_symbol_not_by_arrival(clock: FakeClock) -> None:
    a, b = PriorityTiers(S, clock), PriorityTiers(S, clock)
    a.observe(ticks({"AAA": 5, "ZZZ": 5, "MMM": 1, "NNN": 1, "OOO": 1}))
    b.observe(ticks({"ZZZ": 5, "AAA": 5, "OOO": 1, "NNN": 1, "MMM": 1}))
    assert tiers_by_symbol(a) == tiers_by_symbol(b)
    assert tiers_by_symbol(a)["AAA"] == 1 and tiers_by_symbol(a)["ZZZ"] == 2


def test_of_is_aligned_with_rows_and_defaults_unknown_symbols(clock: FakeClock) -> None:
    tiers = PriorityTiers(S.model_copy(update={"unknown_tier": 2}), clock)
    tiers.observe(ticks({f"S{i}": 100 - 10 * i for i in range(10)}))
    frame = pl.DataFrame({"exchange": ["SIM", "SIM", "SIM", "SIM"], "symbol": ["S9", "NEW", "S0", "S9"]})
    out = tiers.of(frame)
    assert out.dtype == pl.UInt8 and out.to_list() == [3, 2, 1, 3]
    assert tiers.of(frame.clear()).len() == 0


def test_explicit_lists_replace_the_ranking_of_their_exchange(clock: FakeClock) -> None:
    settings = S.model_copy(update={"tiers": {"ASX": ExplicitTiers(tier1=["BHP"], tier2=["CBA", "NAB"])}})
    tiers = PriorityTiers(settings, clock)
    # ASX's busiest symbol is not listed: explicit means explicit, it is tier 3
    tiers.observe(
        pl.concat([ticks({"ZZZ": 1000, "BHP": 1, "CBA": 1}, "ASX"), ticks({"Q": 9, "R": 1}, "SIM")])
    )
    frame = pl.DataFrame(
        {
            "exchange": ["ASX", "ASX", "ASX", "ASX", "ASX", "SIM"],
            "symbol": ["BHP", "CBA", "NAB", "ZZZ", "NEW", "Q"],
        }
    )
    assert tiers.of(frame).to_list() == [1, 2, 2, 3, 3, 1]


def test_refresh_is_periodic_and_frozen_while_skipping_optional_work(clock: FakeClock) -> None:
    tiers = PriorityTiers(S, clock)
    assert tiers.observe(ticks({"A": 10, "B": 5, "C": 1, "D": 1, "E": 1}))  # first ranking: at once
    assert tiers_by_symbol(tiers)["A"] == 1
    clock.advance(5)
    assert not tiers.observe(ticks({"E": 10_000}))  # counted, not yet re-ranked
    assert tiers_by_symbol(tiers)["E"] == 3
    clock.advance(30)
    assert not tiers.observe(ticks({"E": 1}), refresh=False)  # degraded: tiers hold still
    assert tiers_by_symbol(tiers)["E"] == 3
    assert tiers.observe(ticks({"E": 1}), refresh=True)
    assert tiers_by_symbol(tiers)["E"] == 1


def test_first_ranking_happens_even_when_frozen(clock: FakeClock) -> None:
    tiers = PriorityTiers(S, clock)
    assert tiers.observe(ticks({"A": 3, "B": 1}), refresh=False)
    assert tiers_by_symbol(tiers) == {"A": 1, "B": 3}  # ceil(2 * 0.5) = 1: no room for tier 2


def test_volume_decays_so_the_ranking_follows_the_market(clock: FakeClock) -> None:
    tiers = PriorityTiers(S, clock)  # half-life 60 s
    tiers.observe(ticks({"OLD": 1000, "X1": 1, "X2": 1, "X3": 1, "X4": 1}))
    assert tiers_by_symbol(tiers)["OLD"] == 1
    clock.advance(600)  # ten half-lives: 1000 -> ~1
    tiers.observe(ticks({"NEW": 50}))
    ranks = tiers_by_symbol(tiers)
    assert ranks["NEW"] == 1 and ranks["OLD"] != 1
    assert "X1" not in ranks  # faded below the floor: forgotten, so the table stays bounded


def test_pending_counts_stay_bounded_while_frozen(clock: FakeClock) -> None:
    tiers = PriorityTiers(S, clock)
    tiers.observe(ticks({"A": 1}))
    for _ in range(500):
        clock.advance(1)
        tiers.observe(ticks({"A": 1, "B": 2}), refresh=False)
    assert len(tiers._pending) <= 33  # folded, not piled up
    tiers.refresh()
    assert tiers_by_symbol(tiers) == {"B": 1, "A": 3}
