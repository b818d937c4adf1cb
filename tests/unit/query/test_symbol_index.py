"""The hot-row cache's symbol index: row ranges of each symbol, from the column's runs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from k2.query.partials import _symbol_index_unsorted, symbol_index


def _sorted_table(seed: int, rows: int, symbols: int, chunks: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = np.sort(rng.choice([f"S{i:04d}" for i in range(symbols)], rows))
    pieces = np.array_split(names, chunks)
    return pa.Table.from_batches([pa.record_batch({"symbol": pa.array(p, pa.string())}) for p in pieces])


@pytest.mark.parametrize("seed", range(8))
def test_sorted_tables_index_like_the_former_index_whatever_the_chunks(seed: int) -> None:
    table = _sorted_table(seed, rows=5_000 + 1_000 * seed, symbols=1 + 7 * seed, chunks=1 + seed % 4)
    index = symbol_index(table)
    assert index == _symbol_index_unsorted(table)
    assert sum(hi - lo for lo, hi in index.values()) == table.num_rows
    symbols = table.column("symbol").to_pylist()
    for name, (lo, hi) in index.items():
        assert set(symbols[lo:hi]) == {name}


def test_a_table_whose_symbols_repeat_in_runs_falls_back_to_the_former_index() -> None:
    table = pa.table({"symbol": ["B", "B", "A", "B"]})
    assert symbol_index(table) == _symbol_index_unsorted(table) == {"A": (2, 4), "B": (0, 2)}


def test_an_empty_table_has_no_symbols() -> None:
    assert symbol_index(pa.table({"symbol": pa.array([], pa.string())})) == {}
