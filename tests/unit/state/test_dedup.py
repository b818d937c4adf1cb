"""Two-tier dedup on the embedded exact store: verdicts, the Bloom-positive rule, window, files."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from k2.observability.metrics import sample
from k2.state.base import PartitionToken
from k2.state.dedup import Deduplicator
from k2.state.embedded import EmbeddedDedupStore
from k2.state.errors import StaleStateError

T = datetime(2024, 3, 4, 10, tzinfo=UTC)


def ids(*numbers: int) -> pl.Series:
    return pl.Series("message_id", [f"{n:032x}" for n in numbers])


def dedup(tmp_path: Path, **kw: float) -> Deduplicator:
    opts = {"window_hours": 4.0, "generations": 4, "capacity": 100_000, "error_rate": 0.001} | kw
    return Deduplicator("trades", EmbeddedDedupStore(tmp_path, "trades"), **opts)  # type: ignore[arg-type]


def test_in_batch_and_cross_batch_duplicates(tmp_path: Path) -> None:
    d = dedup(tmp_path)
    assert d.check(ids(1, 2, 1, 3, 2), T).to_list() == [False, False, True, False, True]
    d.commit(ids(1, 2, 3), T, [PartitionToken("k2.trades", 0, None, 5)])
    assert d.check(ids(4, 2, 5, 3), T + timedelta(minutes=1)).to_list() == [False, True, False, True]


def test_ids_are_not_remembered_before_commit(tmp_path: Path) -> None:
    d = dedup(tmp_path)
    d.check(ids(1), T)
    assert d.check(ids(1), T).to_list() == [False]


def test_a_bloom_positive_alone_never_drops_a_tick(tmp_path: Path) -> None:
    # a tiny, overfull filter claims almost everything; the exact store must overrule it
    d = dedup(tmp_path, capacity=1000, error_rate=0.4)
    seen = list(range(1, 5001))
    d.commit(ids(*seen), T, [])
    before = sample("k2_bloom_false_positives_total")
    fresh = ids(*range(10_000, 12_000))
    verdict = d.check(fresh, T)
    assert not verdict.any()
    d.commit(fresh, T, [])
    assert sample("k2_bloom_false_positives_total") - before > 100
    assert d.check(ids(*seen[:100]), T).all()


def test_window_slides_with_exchange_time(tmp_path: Path) -> None:
    d = dedup(tmp_path)  # 4 h window, 1 h generations
    d.commit(ids(1), T, [])
    assert d.check(ids(1), T + timedelta(hours=2)).to_list() == [True]
    d.commit(ids(2), T + timedelta(hours=2), [])
    # 4 generations later generation(T) is dropped from the filter and the store
    assert d.check(ids(1, 2), T + timedelta(hours=4, minutes=1)).to_list() == [False, True]
    d.commit(ids(3), T + timedelta(hours=4, minutes=1), [])
    assert T.timestamp() * 1e6 // d.span_us not in d.store.generations()


def test_per_row_times_pick_generations(tmp_path: Path) -> None:
    d = dedup(tmp_path)
    ts = pl.Series([T, T + timedelta(hours=1)]).dt.cast_time_unit("us")
    d.commit(ids(1, 2), ts, [])
    assert len(d.store.generations()) == 2


def test_stale_commit_changes_neither_tier(tmp_path: Path) -> None:
    d = dedup(tmp_path)
    d.commit(ids(1), T, [PartitionToken("k2.trades", 0, None, 1)])
    with pytest.raises(StaleStateError):
        d.commit(ids(2), T, [PartitionToken("k2.trades", 0, 0, 2)])
    assert d.check(ids(2), T).to_list() == [False]
    assert not d.bloom.contains(ids(2)).any()


@pytest.mark.parametrize("keep", [0, 3, 8, 20, -1])
def test_a_truncated_bloom_file_is_rebuilt_not_fatal(tmp_path: Path, keep: int) -> None:
    d = dedup(tmp_path)
    d.commit(ids(1, 2), T, [PartitionToken("k2.trades", 0, None, 2)])
    path = tmp_path / "trades.bloom"
    d.save(path)
    path.write_bytes(path.read_bytes()[:keep])  # a prefix: empty, inside the length, the header, the bits
    restarted = dedup(tmp_path)
    assert restarted.load(path) is False  # rebuilt from the exact store
    assert restarted.check(ids(1, 2, 3), T).to_list() == [True, True, False]


def test_save_load_uses_the_file_only_when_tokens_match(tmp_path: Path) -> None:
    d = dedup(tmp_path)
    d.commit(ids(1, 2), T, [PartitionToken("k2.trades", 0, None, 2)])
    path = tmp_path / "trades.bloom"
    d.save(path)
    restarted = dedup(tmp_path)
    assert restarted.load(path) is True
    assert restarted.check(ids(1, 2, 3), T).to_list() == [True, True, False]
    # a commit after the save: the file is stale, so the filter is rebuilt from the exact store
    restarted.commit(ids(3), T, [PartitionToken("k2.trades", 0, 2, 3)])
    again = dedup(tmp_path)
    assert again.load(path) is False
    assert again.check(ids(1, 3, 4), T).to_list() == [True, True, False]
    missing = dedup(tmp_path)
    assert missing.load(tmp_path / "absent.bloom") is False
    assert missing.check(ids(3), T).to_list() == [True]


def test_a_file_of_the_rbloom_format_is_rebuilt_from_the_exact_store(tmp_path: Path) -> None:
    d = dedup(tmp_path)
    d.commit(ids(1, 2), T, [PartitionToken("k2.trades", 0, None, 2)])
    # what the rbloom version saved: its tokens match the store, but its bits are another layout
    head = {
        "format": "k2-dedup-bloom/1", "kind": "trades", "span_us": d.span_us,
        "tokens": [["k2.trades", 0, 2]], "capacity": 100_000, "error_rate": 0.001, "generations": 4,
        "current": d.bloom.current, "filters": [[d.bloom.current, 16]],
    }  # fmt: skip
    raw = json.dumps(head).encode()
    path = tmp_path / "trades.bloom"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\xff" * 16)
    restarted = dedup(tmp_path)
    assert restarted.load(path) is False
    assert restarted.check(ids(1, 2, 3), T).to_list() == [True, True, False]
    restarted.save(path)  # the new format is then used
    assert dedup(tmp_path).load(path) is True


def test_metrics_count_committed_batches(tmp_path: Path) -> None:
    d = dedup(tmp_path)
    before = sample("k2_dedup_duplicates_total", {"kind": "trades"})
    d.check(ids(1, 1, 1), T)
    d.commit(ids(1), T, [])
    assert sample("k2_dedup_duplicates_total", {"kind": "trades"}) - before == 2


def test_positives_are_confirmed_in_the_generation_whose_filter_claimed_them(tmp_path: Path) -> None:
    d = dedup(tmp_path)  # 1 h generations
    d.commit(ids(1, 2), T, [])
    d.commit(ids(3), T + timedelta(hours=1), [])
    d.commit(ids(4), T + timedelta(hours=2), [])
    assert len(d.store.generations()) == 3
    verdict = d.check(ids(4, 5, 1, 3, 2, 6), T + timedelta(hours=2, minutes=5))
    assert verdict.to_list() == [True, False, True, True, True, False]
