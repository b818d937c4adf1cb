"""A crash between the lake's commit and the state's, with the degradation level changed across it.

The restarted ingester reads the committed range again to rebuild the sequence state. Which rows of
that range were deferred to the spill was decided by the run that committed it, at its level; the
rebuild must follow that decision, not the level of the run that reads it again. These reproduce
both ways it went wrong (``k2.pipeline.deferrals``) on the real broker, lake and state store:
deferred then and applied now lost the ticks (their spill copies were judged duplicates), applied
then and deferred now wrote re-sent copies a second time (into a gap that never was).
"""

from __future__ import annotations

import json
import signal

import polars as pl

from k2.config import Settings
from k2.lake import open_catalog
from tests.integration.test_pipeline import SYMBOLS, _ingest, _produce, make_trades

DEFERRED = "WES"  # the one tier-3 symbol: GRACEFUL defers it and nothing else
TIERS = json.dumps({"SIM": {"tier1": [s for s in SYMBOLS if s != DEFERRED]}})
SMALL = {
    "K2_LAKE__COMMIT_ROWS": "1000",
    "K2_PIPELINE__BATCH_MAX_MESSAGES": "500",
    "K2_PIPELINE__INSTANCE_ID": "ingest-1",  # static membership: a restart takes the partitions at once
    "K2_RESILIENCE__TIERS": TIERS,
    "K2_RESILIENCE__COOLDOWN_S": "3",  # a forced level steps down soon after, so the back-fill runs
}


def _one_partition(settings: Settings) -> Settings:
    """Every symbol on one partition, so the range read again holds WES's rows whatever the timing."""
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"partitions": 1})})


def _run(settings: Settings, *args: str, **env: str) -> str:
    proc = _ingest(settings, *args, **{**SMALL, **env})
    out = proc.communicate(timeout=300)[0].decode()
    crash = "--crash-at" in args
    assert proc.returncode == (-signal.SIGKILL if crash else 0), out[-3000:]
    return out


def _trades(settings: Settings) -> pl.DataFrame:
    table = open_catalog(settings).load_table(f"{settings.lake.namespace}.trades")
    rows = pl.from_arrow(table.scan(selected_fields=("message_id", "symbol")).to_arrow())
    assert isinstance(rows, pl.DataFrame)
    return rows


def _assert_each_once(settings: Settings, sent: pl.DataFrame) -> None:
    rows = _trades(settings)
    ids = rows.get_column("message_id")
    dupes = rows.filter(ids.is_duplicated())
    assert dupes.is_empty(), (
        f"{dupes.height} rows written twice, symbols {dupes['symbol'].unique().to_list()}"
    )
    missing = set(sent["message_id"].to_list()) - set(ids.to_list())
    lost = sent.filter(pl.col("message_id").is_in(list(missing)))
    assert not missing, f"{len(missing)} ticks lost, symbols {lost['symbol'].unique().to_list()}"
    assert rows.height == sent.height


def test_rows_deferred_before_the_crash_are_not_applied_by_the_rebuild(settings: Settings) -> None:
    """Run 1 starts at GRACEFUL (WES to the spill) and dies after its 2nd trades commit, before the
    state's; run 2 at NORMAL reads that range again, then back-fills WES from the spill."""
    settings = _one_partition(settings)
    sent = make_trades(6_000)
    _produce(settings, sent)
    _run(settings, "--level", "graceful", "--crash-at", "trades-committed:2")
    assert DEFERRED not in set(_trades(settings)["symbol"].to_list())  # all of it waits in the spill
    out = _run(settings, "--idle-timeout", "5")
    _assert_each_once(settings, sent)
    rebuilt = [json.loads(line) for line in out.splitlines() if "sequence state rebuilt" in line]
    assert len(rebuilt) == 1 and rebuilt[0]["messages"] > 0 and rebuilt[0]["seconds"] >= 0, out[-2000:]


def test_rows_written_before_the_crash_are_applied_by_a_rebuild_that_defers(settings: Settings) -> None:
    """Run 1 at NORMAL dies after its 2nd trades commit, before the state's; everything is sent again
    (all duplicates); run 2 starts at GRACEFUL, so today's level would defer WES's rows of the range
    it reads again, then steps down and back-fills."""
    settings = _one_partition(settings)
    sent = make_trades(6_000)
    _produce(settings, sent)
    _run(settings, "--crash-at", "trades-committed:2")
    written = _trades(settings)
    assert DEFERRED in set(written["symbol"].to_list())
    _produce(settings, sent)  # a full re-send: every tick a duplicate of one already written or due
    _run(settings, "--level", "graceful", "--idle-timeout", "5")
    _assert_each_once(settings, sent)
    gaps = open_catalog(settings).load_table(f"{settings.lake.namespace}.sequence_gaps").scan().to_arrow()
    opened = pl.from_arrow(gaps).filter(pl.col("event") == "opened")  # type: ignore[union-attr]
    # a symbol deferred while others run live opens a gap that its back-fill recovers; none else
    assert set(opened["symbol"].to_list()) <= {DEFERRED}


def test_back_filled_rows_are_rebuilt_before_new_ticks_of_their_partition(settings: Settings) -> None:
    """Run 0 at AGGRESSIVE defers CSL (tier 2) and WES (tier 3) and stops cleanly; run 1 at NORMAL
    back-fills them and dies after its trades commit, before the state's; everything is sent again;
    run 2 starts at GRACEFUL, which pauses back-fill but lets CSL's re-sent ticks run live. The spill
    range run 1 wrote must be read into the state first, or those re-sent ticks are new to it."""
    settings = _one_partition(settings)
    tiers = json.dumps(
        {"SIM": {"tier1": [s for s in SYMBOLS if s not in (DEFERRED, "CSL")], "tier2": ["CSL"]}}
    )
    sent = make_trades(6_000)
    _produce(settings, sent)
    _run(settings, "--level", "aggressive", "--duration", "15", K2_RESILIENCE__TIERS=tiers,
         K2_RESILIENCE__COOLDOWN_S="3600")  # fmt: skip
    assert not {"CSL", DEFERRED} & set(_trades(settings)["symbol"].to_list())  # both wait in the spill
    _run(settings, "--crash-at", "trades-committed:1", K2_RESILIENCE__TIERS=tiers)
    assert "CSL" in set(_trades(settings)["symbol"].to_list())  # back-filled, the state not committed
    _produce(settings, sent)
    out = _run(settings, "--level", "graceful", "--idle-timeout", "5", K2_RESILIENCE__TIERS=tiers)
    assert "spill partition read again before its source" in out
    _assert_each_once(settings, sent)
