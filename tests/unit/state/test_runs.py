"""Sorted runs of ids in SQLite: lookups, merges, crash atomicity, and the old layout's conversion."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from k2.state import runs
from k2.state.base import PartitionToken
from k2.state.embedded import EmbeddedDedupStore
from k2.state.errors import StaleStateError
from k2.state.ids import id_bytes


def _ids(n: int, seed: int) -> list[str]:
    raw = np.random.default_rng(seed).bytes(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def _runs(store: EmbeddedDedupStore, gen: int) -> list[int]:
    rows = store._db.query("SELECT n FROM dedup_runs WHERE ns = ? AND gen = ? ORDER BY run", ("trades", gen))
    return [int(n) for (n,) in rows]


def test_lookups_across_many_runs_and_blocks_are_exact(tmp_path: Path) -> None:
    store = EmbeddedDedupStore(tmp_path, "trades")
    stored: list[str] = []
    for c in range(7):  # uneven sizes, several blocks each, merged as they go
        ids = _ids(runs.BLOCK * 3 + 17 * c, seed=c)
        store.add({4: pl.Series(ids)}, [], drop_before=0)
        stored += ids
    assert len(_runs(store, 4)) <= 3 and sum(_runs(store, 4)) == len(stored)
    absent = _ids(2000, seed=99)
    probe = stored[::7] + absent + [stored[0], stored[-1]]
    expected = [True] * len(stored[::7]) + [False] * len(absent) + [True, True]
    assert store.contains(pl.Series(probe), [4]) == expected
    assert store.contains(probe, [3, 5]) == [False] * len(probe)
    assert sorted(store.ids(4)) == sorted(stored)


def test_binary_counter_merging_keeps_few_runs(tmp_path: Path) -> None:
    store = EmbeddedDedupStore(tmp_path, "trades")
    for c in range(11):
        store.add({1: _ids(100, seed=c)}, [], drop_before=0)
    assert _runs(store, 1) == [800, 200, 100]  # 11 = 8 + 2 + 1
    # a replayed commit: merged with the newer runs only, so stored twice until the runs meet;
    # lookups don't care, and ids() answers each once
    store.add({1: _ids(100, seed=0)}, [], drop_before=0)
    assert _runs(store, 1) == [800, 400] and len(store.ids(1)) == 1100
    store.add({1: _ids(400, seed=50)}, [], drop_before=0)
    assert _runs(store, 1) == [1500]


def test_bytes_spanning_two_ids_are_not_a_match(tmp_path: Path) -> None:
    # the probe's bytes occur inside the block, straddling two stored ids: instr finds them first
    a, b = "00" * 8 + "11" * 8, "22" * 8 + "33" * 8
    straddle = "11" * 8 + "22" * 8
    store = EmbeddedDedupStore(tmp_path, "trades")
    store.add({1: [a, b]}, [], drop_before=0)
    assert store.contains([straddle, a, b], [1]) == [False, True, True]
    later = "11" * 8 + "22" * 8  # now also stored for real, after the straddling occurrence
    store.add({1: [later, "ff" * 16]}, [], drop_before=0)
    assert store.contains([straddle], [1]) == [True]


def test_all_zero_prefix_ids_sort_and_match(tmp_path: Path) -> None:
    ids = [f"{i:032x}" for i in range(0, 5000, 3)]
    store = EmbeddedDedupStore(tmp_path, "trades")
    store.add({2: ids[::2]}, [], drop_before=0)
    store.add({2: ids[1::2]}, [], drop_before=0)
    probe = [f"{i:032x}" for i in range(5000)]
    assert store.contains(probe, [2]) == [i % 3 == 0 for i in range(5000)]


def test_a_failed_commit_leaves_the_old_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddedDedupStore(tmp_path, "trades")
    first = _ids(300, seed=1)
    store.add({1: first}, [PartitionToken("t", 0, None, 1)], drop_before=0)

    def crash(db: sqlite3.Connection, ns: str, gen: int) -> None:
        raise RuntimeError("killed between the merge and the drop")

    monkeypatch.setattr(runs, "drop_before", crash)  # the merge of both runs already ran
    with pytest.raises(RuntimeError):
        store.add({1: _ids(300, seed=2)}, [PartitionToken("t", 0, 1, 2)], drop_before=0)
    monkeypatch.undo()
    again = EmbeddedDedupStore(tmp_path, "trades")
    assert _runs(again, 1) == [300] and again.tokens() == {("t", 0): 1}
    assert again.contains(first[:5] + _ids(300, seed=2)[:5], [1]) == [True] * 5 + [False] * 5
    with pytest.raises(StaleStateError):  # fencing still describes exactly what is stored
        again.add({1: _ids(3, seed=3)}, [PartitionToken("t", 0, 0, 2)], drop_before=0)


def test_generations_drop_as_a_unit(tmp_path: Path) -> None:
    store = EmbeddedDedupStore(tmp_path, "trades")
    for g in (1, 2, 3):
        store.add({g: _ids(200, seed=g)}, [], drop_before=0)
        store.add({g: _ids(200, seed=10 + g)}, [], drop_before=0)
    store.add({}, [], drop_before=3)
    assert store.generations() == [3]
    left = store._db.query("SELECT DISTINCT gen FROM dedup_blocks")
    assert left == [(3,)]


def test_the_table_per_generation_layout_is_converted(tmp_path: Path) -> None:
    ids = _ids(500, seed=5)
    db = sqlite3.connect(tmp_path / "dedup.sqlite", isolation_level=None)
    db.executescript(
        "CREATE TABLE dedup_gens (ns TEXT NOT NULL, gen INTEGER NOT NULL, PRIMARY KEY (ns, gen)) WITHOUT ROWID;"
        'CREATE TABLE "dd_trades_7" (id BLOB PRIMARY KEY) WITHOUT ROWID;'
        'CREATE TABLE "dd_quotes_7" (id BLOB PRIMARY KEY) WITHOUT ROWID;'
        "INSERT INTO dedup_gens VALUES ('trades', 7), ('quotes', 7);"
    )
    db.executemany('INSERT INTO "dd_trades_7" VALUES (?)', [(bytes.fromhex(i),) for i in ids])
    db.close()
    store = EmbeddedDedupStore(tmp_path, "trades")
    assert store.generations() == [7] and sorted(store.ids(7)) == sorted(ids)
    assert store.contains(ids[:3], [7]) == [True] * 3
    names = {n for (n,) in store._db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "dd_trades_7" not in names and "dd_quotes_7" in names  # another namespace's, untouched


def test_sorted_unique() -> None:
    keys = id_bytes(["0" * 31 + "2", "0" * 32, "0" * 31 + "2", "1" + "0" * 31])
    assert runs.sorted_unique(keys).tobytes().hex() == "0" * 32 + "0" * 31 + "2" + "1" + "0" * 31


def test_sorted_unique_orders_as_bytes_even_when_first_halves_tie() -> None:
    import os

    import numpy as np

    rng = np.random.default_rng(3)
    heads = [os.urandom(8) for _ in range(40)]
    raw = [heads[int(rng.integers(0, 40))] + os.urandom(8) for _ in range(3000)]  # many equal first halves
    raw += [*raw[:500], b"\x00" * 16, b"\xff" * 16, b"\x00" * 15 + b"\x01"]  # repeats and the extremes
    keys = np.frombuffer(b"".join(raw), dtype=runs.ID_DTYPE)
    want = sorted(set(raw))
    assert [bytes(k).ljust(16, b"\x00") for k in runs.sorted_unique(keys)] == want
    assert runs.sorted_unique(keys[:1]).tobytes() == raw[0] and runs.sorted_unique(keys[:0]).size == 0
