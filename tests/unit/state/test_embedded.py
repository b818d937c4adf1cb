"""The embedded (SQLite) stores against the store contracts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from k2.state.base import PartitionToken
from k2.state.embedded import EmbeddedDedupStore, EmbeddedSequenceStore
from k2.state.model import KeyState
from tests.unit.state.contract import DedupStoreContract, SequenceStoreContract


class TestEmbeddedSequenceStore(SequenceStoreContract):
    @pytest.fixture(params=[True, False], ids=["cached", "uncached"])
    def open_store(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> Callable[[], EmbeddedSequenceStore]:
        return lambda: EmbeddedSequenceStore(tmp_path / "state", cache=request.param)


class TestEmbeddedDedupStore(DedupStoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> Callable[[], EmbeddedDedupStore]:
        return lambda: EmbeddedDedupStore(tmp_path / "state", "trades")


def test_cache_is_dropped_when_another_process_commits(tmp_path: Path) -> None:
    key = ("trades", "ASX", "BHP")
    mine = EmbeddedSequenceStore(tmp_path)
    other = EmbeddedSequenceStore(tmp_path)
    mine.commit({key: KeyState(1, 1)}, [PartitionToken("t", 0, None, 1)])
    other.commit({key: KeyState(1, 7)}, [PartitionToken("t", 1, None, 1)])  # another partition's token
    # mine's own next commit must not re-validate its stale cache by reading the new token set
    mine.commit({}, [PartitionToken("t", 0, 1, 2)])
    assert mine.load([key]) == {key: KeyState(1, 7)}
    uncached = EmbeddedSequenceStore(tmp_path, cache=False)
    assert uncached.load([key]) == {key: KeyState(1, 7)}
    uncached.commit({key: KeyState(1, 8)}, [PartitionToken("t", 1, 1, 2)])
    assert uncached.load([key]) == {key: KeyState(1, 8)}


def test_namespaces_do_not_share_ids(tmp_path: Path) -> None:
    trades = EmbeddedDedupStore(tmp_path, "trades")
    quotes = EmbeddedDedupStore(tmp_path, "quotes")
    trades.add({1: ["a" * 32]}, [], drop_before=0)
    assert quotes.contains(["a" * 32], [1]) == [False]
    assert trades.contains(["a" * 32], [1]) == [True]
