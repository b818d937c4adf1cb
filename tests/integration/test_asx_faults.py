"""Sequence checks on the real ASX sample with faults injected at known places."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from k2.config import Settings, load_settings
from k2.feeds.asx import read_asx
from k2.pipeline import Pipeline
from k2.pipeline.sequencing import sequence_checks
from k2.stream.admin import ensure_topics
from k2.stream.producer import TickProducer
from tests.integration.truth_check import table

DAY = date(2014, 3, 10)
DROPPED = {(100, 102), (5000, 5000)}  # never sent: recorded gaps
LATE = 7000  # held back, sent after the rest of the day: a gap, then recovered
RESENT = (200, 300)  # sent twice: duplicates, not written twice


def test_known_faults_in_real_asx_trades_are_found_exactly(settings: Settings, asx_data: Path) -> None:
    settings = load_settings(
        **{**settings.model_dump(), "state": {"backend": "embedded", "reorder_window": 64}}
    )
    replay = read_asx(asx_data, symbols={"BHP", "DVN"}, days={DAY})
    trades = replay.delivery.frame("trades")
    quotes = replay.delivery.frame("quotes")
    bhp = (pl.col("symbol") == "BHP") & (pl.col("session") == DAY)
    dropped = pl.lit(False)
    for first, last in DROPPED:
        dropped = dropped | (bhp & pl.col("sequence").is_between(first, last))
    late = bhp & (pl.col("sequence") == LATE)
    resent = bhp & pl.col("sequence").is_in(list(RESENT))
    sent = pl.concat([trades.filter(~dropped & ~late), trades.filter(resent), trades.filter(late)])
    assert trades.filter(late).height == 1 and trades.filter(resent).height == 2

    ensure_topics(settings.kafka)
    producer = TickProducer(settings.kafka)
    producer.send("quotes", quotes)
    producer.send("trades", sent)
    producer.close()

    stats = Pipeline(settings, checks=sequence_checks(settings)).run(idle_timeout_s=3, max_seconds=120)

    written = table(settings, "trades")
    assert written.height == trades.height - sum(last - first + 1 for first, last in DROPPED)
    assert written["message_id"].n_unique() == written.height
    assert stats.duplicates == len(RESENT)
    assert table(settings, "quotes").height == quotes.height
    gaps = table(settings, "sequence_gaps")
    opened = {
        (r["kind"], r["symbol"], r["first_missing"], r["last_missing"])
        for r in gaps.filter(pl.col("event") == "opened").to_dicts()
    }
    assert opened == {("trades", "BHP", f, la) for f, la in DROPPED} | {("trades", "BHP", LATE, LATE)}
    recovered = gaps.filter(pl.col("event") == "recovered")
    assert recovered.select("symbol", "first_missing", "last_missing").rows() == [("BHP", LATE, LATE)]
    assert recovered["recovered_by"].to_list() == trades.filter(late)["message_id"].to_list()
