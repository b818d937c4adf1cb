"""The commit lock's pure parts: a stable key per table, and no lock where the catalog is not PostgreSQL."""

from __future__ import annotations

from pyiceberg.catalog.sql import SqlCatalog

from k2.lake.commit_lock import commit_lock, lock_key


def test_the_key_is_stable_per_table_and_fits_a_bigint() -> None:
    key = lock_key("k2", "k2.trades")
    assert key == lock_key("k2", "k2.trades")  # every process derives the same key
    assert key != lock_key("k2", "k2.quotes") and key != lock_key("other", "k2.trades")
    assert -(2**63) <= key < 2**63


def test_sqlite_takes_no_lock(catalog: SqlCatalog) -> None:
    with commit_lock(catalog, "k2.ticks"), commit_lock(catalog, "k2.ticks"):
        pass  # re-entered freely: SQLite's own file lock serialises its writers
