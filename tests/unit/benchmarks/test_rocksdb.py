"""bench_rocksdb's RocksDB store keeps K2's sequence-store contract.

When the contract gained partition clocks (``load_clocks``, ``commit(..., clocks)``), the bench's
store did not follow: it could no longer be instantiated and ``make bench`` failed in bench_rocksdb.
It now runs the same contract tests as K2's own stores.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.bench_rocksdb import RocksSequenceStore
from tests.unit.state.contract import SequenceStoreContract


def test_the_bench_store_implements_every_abstract_method() -> None:
    """Checked without rocksdict (not in the dev extra): an abstract method left out fails here."""
    assert not RocksSequenceStore.__abstractmethods__


@pytest.mark.skipif(importlib.util.find_spec("rocksdict") is None, reason="rocksdict (the bench extra)")
class TestRocksSequenceStore(SequenceStoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> Callable[[], RocksSequenceStore]:
        return lambda: RocksSequenceStore(tmp_path / "rocks")
