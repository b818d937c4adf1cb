"""The peers' and query benchmarks build K2's tables with ``stream_in``: it must keep up with them.

When K2's writer began stamping every row with its commit (k2.lake.stamp), ``stream_in`` still
appended rows without the stamp column and ``make bench`` failed on its first append.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from benchmarks.bench_codec import make_ticks
from benchmarks.bench_query import append_stamped, stream_in
from k2.lake.stamp import STAMP_COLUMN
from k2.lake.tables import ensure_tables


def _trades_table(tmp_path: Path) -> Table:
    """K2's trades table on a fresh SQLite catalog in ``tmp_path``."""
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/wh")
    catalog.create_namespace_if_not_exists("k2")
    return ensure_tables(catalog, "k2")["trades"]


def _ticks(rows: int, seed: int) -> pl.DataFrame:
    """Trades with the Kafka lineage columns the table requires."""
    return make_ticks("trades", rows, seed=seed).with_columns(
        pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
        pl.int_range(rows, dtype=pl.Int64).alias("kafka_offset"),
    )


def test_stream_in_appends_every_row_with_a_growing_commit_stamp(tmp_path: Path) -> None:
    table = _trades_table(tmp_path)
    frame = _ticks(3_000, seed=2)
    stream_in(table, frame, 3, "trades")
    table = table.refresh()
    rows = pl.from_arrow(table.scan().to_arrow())
    assert isinstance(rows, pl.DataFrame)
    assert rows.height == 3_000 and rows["message_id"].n_unique() == 3_000
    stamps = rows[STAMP_COLUMN].unique().sort().to_list()
    snapshots = [s.timestamp_ms for s in table.snapshots()]
    assert len(stamps) == 3 and stamps == sorted(snapshots)  # one stamp per commit, the snapshot's time


def test_append_stamped_commits_a_frame_with_extra_columns_as_one_stamped_commit(tmp_path: Path) -> None:
    """bench_client appends a feed's trades one session at a time: it failed on the stamp column too."""
    table = _trades_table(tmp_path)
    frame = _ticks(2_000, seed=3).with_columns(
        (pl.int_range(2_000) % 2).alias("batch"),  # a column the table does not have
    )
    for day in frame.partition_by("batch", maintain_order=True):
        append_stamped(table, day)
    table = table.refresh()
    rows = pl.from_arrow(table.scan().to_arrow())
    assert isinstance(rows, pl.DataFrame)
    assert rows.height == 2_000 and "batch" not in rows.columns
    stamps = rows[STAMP_COLUMN].unique().sort().to_list()
    assert stamps == sorted(s.timestamp_ms for s in table.snapshots()) and len(stamps) == 2
