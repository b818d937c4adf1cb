"""Test data for the query engine: the real ASX sample in a throw-away Iceberg catalog.

Rows are loaded with ``k2.feeds.asx.read_asx`` (canonical frames), given synthetic Kafka lineage
and appended in exchange-time order over several commits, as streaming would leave them. The
independent pandas reference in ``asx_pandas`` reads the CSV files itself, so a shared loader
bug cannot hide in both sides of a comparison.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from k2.feeds.asx import read_asx
from k2.lake.stamp import without_stamp
from k2.lake.tables import ensure_tables

__all__ = ["ASX", "append_commits", "asx_frames", "asx_pandas", "lineage", "new_catalog"]

ASX = Path(__file__).resolve().parents[3] / "data" / "asx-2014-03"


def new_catalog(root: Path, namespace: str = "k2") -> tuple[SqlCatalog, dict[str, Table]]:
    """A SQLite catalog under ``root`` with K2's tables."""
    root.mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog("test", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse")
    catalog.create_namespace_if_not_exists(namespace)
    return catalog, ensure_tables(catalog, namespace)


@cache
def asx_frames(days: tuple[date, ...] | None = None) -> dict[str, pl.DataFrame]:
    """Canonical trades and quotes frames of the sample (optionally some trading days only)."""
    replay = read_asx(ASX, days=set(days) if days else None)
    return {"trades": replay.delivery.trades, "quotes": replay.delivery.quotes}


def lineage(frame: pl.DataFrame, table: Table, offset: int = 0) -> pa.Table:
    """The frame with Kafka lineage columns, as Arrow in the table's schema."""
    out = frame.with_columns(
        pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
        pl.int_range(offset, offset + frame.height, dtype=pl.Int64).alias("kafka_offset"),
    )
    schema = without_stamp(table.schema().as_arrow())  # appended directly: no commit stamp
    return out.select(schema.names).to_arrow().cast(schema)


def append_commits(table: Table, frame: pl.DataFrame, commits: int) -> list[int]:
    """Append ``frame`` in ``commits`` consecutive slices; returns the snapshot ids."""
    size = -(-frame.height // commits)
    ids = []
    for i in range(commits):
        part = frame.slice(i * size, size)
        if part.height == 0:
            break
        table.append(lineage(part, table, i * size))
        snap = table.current_snapshot()
        assert snap is not None
        ids.append(snap.snapshot_id)
    return ids


@cache
def asx_pandas(kind: str) -> pd.DataFrame:
    """The sample read straight from the CSV files with pandas (independent of k2.feeds)."""
    companies = pd.read_csv(ASX / "reference" / "company_info.csv")
    names = (
        ["date", "time", "price", "size", "qualifiers", "venue", "buyer"]
        if kind == "trades"
        else ["date", "time", "bid_price", "ask_price", "bid_size", "ask_size"]
    )
    frames = []
    for company, symbol in zip(companies["company_id"], companies["symbol"], strict=True):
        df = pd.read_csv(ASX / kind / f"{company}.csv", header=None, names=names, dtype={"qualifiers": str})
        df["symbol"] = symbol
        df["file_order"] = range(len(df))
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    local = pd.to_datetime(df["date"] + " " + df["time"], format="%m/%d/%Y %H:%M:%S.%f")
    df["local"] = local
    df["exchange_ts"] = local.dt.tz_localize("Australia/Sydney").dt.tz_convert("UTC")
    df["session"] = local.dt.date
    return df
