"""The simulator's ground truth against what it delivered, and against a clean run of the same seed."""

from __future__ import annotations

from collections import Counter

import polars as pl
import pytest

from k2.feeds.faults import MALFORMED_REASONS
from k2.feeds.market import MarketConfig, symbol_names
from k2.feeds.simulator import Simulator, SimulatorConfig
from k2.schemas import decode_batch, frame_schema, message_id, message_ids
from tests.unit.feeds.conftest import FAULTS, Run, simulate
from tests.unit.feeds.consumer import observe

KINDS = ("trades", "quotes")


def _range_ids(kind: str, ranges: list[dict[str, object]]) -> set[str]:
    return {
        message_id(kind, str(r["exchange"]), str(r["symbol"]), str(r["session"]), seq)
        for r in ranges
        for seq in range(int(r["first"]), int(r["last"]) + 1)  # type: ignore[call-overload]
    }


def test_same_seed_same_frames_and_truth() -> None:
    a = simulate(FAULTS, count=12_000)
    b = simulate(FAULTS, count=12_000)
    for kind in KINDS:
        assert a.frame(kind).equals(b.frame(kind))
    assert [m.value for m in a.raw] == [m.value for m in b.raw]
    assert all((x.order == y.order).all() for x, y in zip(a.deliveries, b.deliveries, strict=True))
    assert a.truth == b.truth
    other = simulate(FAULTS, count=12_000, seed=8)
    assert not other.frame("trades").equals(a.frame("trades"))


def test_frames_are_canonical(faulty: Run) -> None:
    for kind in KINDS:
        frame = faulty.frame(kind)
        assert frame.schema == pl.Schema(frame_schema(kind))
        assert frame["exchange"].unique().to_list() == ["SIM"]
        assert frame["message_id"].equals(message_ids(kind, frame))


def test_every_fault_happened(faulty: Run) -> None:
    for kind in KINDS:
        t = faulty.truth["kinds"][kind]
        assert t["dropped"] and t["late_filled"] and t["duplicates"]["count"] and t["reordered"]["count"]
        assert t["malformed"] > 0
    assert faulty.truth["session_resets"]


def test_truth_counts_match_the_delivered_stream(faulty: Run) -> None:
    for kind in KINDS:
        t = faulty.truth["kinds"][kind]
        frame = faulty.frame(kind)
        raw = [m for m in faulty.raw if m.kind == kind]
        assert t["messages"] == frame.height + len(raw) == t["sent"] + t["duplicate_copies"] + t["malformed"]
        assert t["sent"] == frame["message_id"].n_unique() == t["generated"] - t["dropped_ticks"]
        assert t["dropped_ticks"] == sum(g["last"] - g["first"] + 1 for g in t["dropped"])
        assert t["late_filled_ticks"] == sum(len(g["message_ids"]) for g in t["late_filled"])
        assert frame["message_id"].unique().sort().to_list() == sorted(t["sent_ids"])
        assert frame["message_id"].unique(maintain_order=True).to_list() == t["sent_ids"]
        copies = frame["message_id"].value_counts().filter(pl.col("count") > 1)
        assert copies["count"].max() == 2
        assert sorted(copies["message_id"].to_list()) == sorted(t["duplicates"]["message_ids"])
        assert Counter(m.reason for m in raw) == Counter(t["malformed_payloads"]["by_reason"])
        assert set(t["malformed_payloads"]["by_reason"]) <= set(MALFORMED_REASONS)


def test_truth_applied_to_the_clean_stream_gives_the_delivered_stream(faulty: Run, clean: Run) -> None:
    """Same seed, no faults but the resets: sent = clean - dropped, with identical row content."""
    for kind in KINDS:
        t = faulty.truth["kinds"][kind]
        clean_frame = clean.frame(kind)
        assert clean.truth["kinds"][kind]["generated"] == t["generated"] == clean_frame.height
        dropped = _range_ids(kind, t["dropped"])
        assert dropped <= set(clean_frame["message_id"])
        assert set(t["sent_ids"]) == set(clean_frame["message_id"]) - dropped
        for filled in t["late_filled"]:
            assert set(filled["message_ids"]) == _range_ids(kind, [filled])
        delivered = faulty.frame(kind).unique("message_id", keep="first").sort("message_id")
        expected = clean_frame.filter(~pl.col("message_id").is_in(sorted(dropped))).sort("message_id")
        assert delivered.equals(expected)
        # the clean stream itself is complete: every stream is 1..last with no hole
        per_stream = clean_frame.group_by("symbol", "session").agg(pl.len(), pl.col("sequence").max())
        assert (per_stream["len"] == per_stream["sequence"]).all()


def test_a_reference_consumer_finds_exactly_the_truth(faulty: Run) -> None:
    window = FAULTS.reorder_window
    for kind in KINDS:
        t = faulty.truth["kinds"][kind]
        frame = faulty.frame(kind)
        found = observe(frame, window)
        assert not found.ambiguous and not found.unexpected_start
        assert found.duplicates == t["duplicates"]["message_ids"]
        assert found.reordered == t["reordered"]["message_ids"]
        assert sorted(found.late_filled) == sorted(i for g in t["late_filled"] for i in g["message_ids"])
        reordered = frame.filter(pl.col("message_id").is_in(t["reordered"]["message_ids"])).unique(
            "message_id"
        )
        one_tick = {
            (s, d.isoformat(), q, q)
            for s, d, q in reordered.select("symbol", "session", "sequence").iter_rows()
        }
        gaps = {(g["symbol"], g["session"], g["first"], g["last"]) for g in t["gaps"]}
        assert found.opened == gaps | one_tick
        assert gaps.isdisjoint(one_tick)
        never = {
            (g["symbol"], g["session"], s) for g in t["dropped"] for s in range(g["first"], g["last"] + 1)
        }
        assert found.holes == never


def test_session_resets_restart_sequences(faulty: Run) -> None:
    quotes = faulty.frame("quotes")
    for reset in faulty.truth["session_resets"]:
        assert reset["to_session"] > reset["from_session"]
        assert reset["last_sequence"]["trades"] + reset["last_sequence"]["quotes"] >= 1
        new = quotes.filter(
            pl.col("symbol") == reset["symbol"], pl.col("session").cast(pl.String) == reset["to_session"]
        )
        if new.height:
            assert new["sequence"].min() == 1


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_payloads_do_not_decode(faulty: Run, kind: str) -> None:
    raw = [m for m in faulty.raw if m.kind == kind]
    assert raw
    result = decode_batch(kind, [m.value for m in raw])
    assert result.frame.height == 0
    assert sorted(i for i, _ in result.errors) == list(range(len(raw)))
    assert all(m.key is not None and m.key.decode() in faulty.sim.config.market.symbols for m in raw)


def test_without_truth_the_stream_is_the_same() -> None:
    market = MarketConfig(symbols=symbol_names(4, 1), chunk_ticks=3_000)
    kept = Simulator(SimulatorConfig(market, FAULTS, seed=1))
    lean = Simulator(SimulatorConfig(market, FAULTS, seed=1), keep_truth=False)
    for a, b in zip(kept.deliveries(count=8_000), lean.deliveries(count=8_000), strict=True):
        assert a.trades.equals(b.trades) and a.quotes.equals(b.quotes)
    assert kept.truth.to_dict()["kinds"]["trades"]["generated"] > 0
    assert lean.truth.to_dict()["kinds"]["trades"]["generated"] == 0
