"""The embedded (SQLite) stores against the store contracts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from k2.state.base import PartitionToken
from k2.state.embedded import EmbeddedDedupStore, EmbeddedSequenceStore, _Sqlite
from k2.state.errors import StateCorruptError, StateStoreError
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


@pytest.mark.parametrize("store", [EmbeddedSequenceStore, EmbeddedDedupStore])
def test_a_file_that_is_not_a_database_is_corrupt_not_retryable(tmp_path: Path, store: type) -> None:
    name = "sequence.sqlite" if store is EmbeddedSequenceStore else "dedup.sqlite"
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / name).write_bytes(b"this is not SQLite " * 500)
    with pytest.raises(StateCorruptError, match="is corrupt") as info:
        store(tmp_path) if store is EmbeddedSequenceStore else store(tmp_path, "ns")
    assert not isinstance(info.value, StateStoreError)  # the pipeline retries those; not this
    assert info.value.path == tmp_path / name


def test_damaged_pages_are_corrupt_too(tmp_path: Path) -> None:
    schema = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB);"
    path = tmp_path / "x.sqlite"
    db = _Sqlite(path, schema)
    with db.transaction() as conn:
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, b"x" * 200) for i in range(2000)])
    db.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.db.close()
    data = bytearray(path.read_bytes())
    for offset in range(4096 + 16, len(data), 97):  # scribble over every page but the header
        data[offset] = 0xA5
    path.write_bytes(bytes(data))
    with pytest.raises(StateCorruptError):
        _Sqlite(path, schema).query("SELECT count(*), sum(length(v)) FROM t")
