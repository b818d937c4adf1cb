"""K2's Iceberg tables: schemas derived from the Avro schemas, partitioning and sort order.

Tick tables are partitioned by day of exchange time and bucket(8) of symbol: a one-symbol, one-day
query touches one partition, while a commit writes at most a handful of files (identity(symbol)
would write one file per symbol per commit; MEASURED.md: 0.52 M rows/s against 0.92 M for buckets).
Each row also records the Kafka partition and offset it came from, so any row can be traced to
the message that carried it and exactly-once is checkable with a query, and the time of the commit
that wrote it (``k2_commit_ms``, k2.lake.stamp), so time travel stays exact after expiry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform
from pyiceberg.types import (
    DateType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from k2 import schemas
from k2.config import LakeSettings
from k2.lake.errors import TableMissingError
from k2.lake.stamp import STAMP_COLUMN, STAMP_DOC, STAMPED_SINCE_KEY, ensure_stamp_column
from k2.types import GAPS_TABLE, TABLES, TICK_KINDS

__all__ = [
    "GAPS",
    "TABLES",
    "TICK_TABLES",
    "TableSpec",
    "ensure_tables",
    "load_table",
    "maintained_properties",
]

LINEAGE = ("kafka_partition", "kafka_offset")
SYMBOL_BUCKETS = 8
ROW_GROUP_ROWS = 16_384

# Every streaming commit must be a compare-and-set on the table head: pyiceberg would otherwise
# re-apply a stale append on top of a concurrent commit and duplicate rows (MEASURED.md).
COMMON_PROPERTIES = {
    "commit.retry.num-retries": "0",
    "write.parquet.compression-codec": "zstd",
    # A column's dictionary gives up at this size. message_id is unique per row: with pyiceberg's 2 MiB
    # default, every file first builds a dictionary of ids it then throws away. 64 KiB still holds
    # thousands of symbols. Measured on 300 K trades: writes 25 % faster, files 13 % smaller.
    "write.parquet.dict-size-bytes": str(64 * 1024),
    # Files are sorted by symbol, so smaller row groups let a query for one symbol skip the others by
    # their statistics (DuckDB, one of 12 symbols: a 50,000-row file 5.8 -> 3.3 ms, a 600,000-row
    # file 18.1 -> 12.8 ms), for ~17 % more bytes per trade (ASX + simulated trades, 100 symbols:
    # 32.4 -> 38.0; 32,768 rows: 35.5). ``lake.row_group_rows`` sets it; this is its default.
    "write.parquet.row-group-limit": str(ROW_GROUP_ROWS),
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "20",
    # Every commit writes a new metadata.json; without these they pile up forever (measured: 730
    # versions, 207 MB, after 15 minutes). pyiceberg deletes the surplus after each commit.
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    "write.target-file-size-bytes": str(128 * 1024 * 1024),
    "format-version": "2",
}


def maintained_properties(lake: LakeSettings) -> dict[str, str]:
    """The properties upkeep holds every K2 table to (older tables are brought up to date)."""
    props = {k: v for k, v in COMMON_PROPERTIES.items() if k != "format-version"}
    props["write.metadata.previous-versions-max"] = str(lake.metadata_versions_kept)
    props["write.target-file-size-bytes"] = str(lake.target_file_mb * 1024 * 1024)
    props["write.parquet.row-group-limit"] = str(lake.row_group_rows)
    return props


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: Schema
    partition_spec: PartitionSpec = field(default_factory=PartitionSpec)
    sort_order: SortOrder = field(default_factory=SortOrder)


def _with_lineage(base: Schema) -> Schema:
    next_id = base.highest_field_id + 1
    return Schema(
        *base.fields,
        NestedField(next_id, LINEAGE[0], IntegerType(), required=True, doc="Kafka partition of the message"),
        NestedField(next_id + 1, LINEAGE[1], LongType(), required=True, doc="Kafka offset of the message"),
        NestedField(next_id + 2, STAMP_COLUMN, LongType(), required=False, doc=STAMP_DOC),
    )


def _tick_spec(kind: str) -> TableSpec:
    schema = _with_lineage(schemas.iceberg_schema(kind))
    ts = schema.find_field("exchange_ts").field_id
    sym = schema.find_field("symbol").field_id
    seq = schema.find_field("sequence").field_id
    spec = PartitionSpec(
        PartitionField(ts, 1000, DayTransform(), "exchange_day"),
        PartitionField(sym, 1001, BucketTransform(SYMBOL_BUCKETS), "symbol_bucket"),
    )
    order = SortOrder(
        SortField(sym, IdentityTransform()),
        SortField(ts, IdentityTransform()),
        SortField(seq, IdentityTransform()),
    )
    return TableSpec(kind, schema, spec, order)


GAPS_SCHEMA = Schema(
    NestedField(1, "kind", StringType(), required=True),
    NestedField(2, "exchange", StringType(), required=True),
    NestedField(3, "symbol", StringType(), required=True),
    NestedField(4, "session", DateType(), required=True),
    NestedField(5, "first_missing", LongType(), required=True),
    NestedField(6, "last_missing", LongType(), required=True),
    NestedField(7, "size", LongType(), required=True),
    NestedField(8, "event", StringType(), required=True, doc="opened | recovered"),
    NestedField(9, "detected_at", TimestamptzType(), required=True),
    NestedField(10, "recovered_at", TimestamptzType(), required=False),
    NestedField(11, "recovered_by", StringType(), required=False, doc="message id that completed the fill"),
    NestedField(12, LINEAGE[0], IntegerType(), required=True),
    NestedField(13, LINEAGE[1], LongType(), required=True),
    NestedField(14, STAMP_COLUMN, LongType(), required=False, doc=STAMP_DOC),
)

GAPS = GAPS_TABLE
TICK_TABLES = TICK_KINDS


def _specs() -> dict[str, TableSpec]:
    return {
        "trades": _tick_spec("trades"),
        "quotes": _tick_spec("quotes"),
        "reference": TableSpec("reference", schemas.iceberg_schema("instruments")),
        GAPS: TableSpec(GAPS, GAPS_SCHEMA),
    }


def ensure_tables(catalog: Catalog, namespace: str) -> dict[str, Table]:
    """Create K2's tables where missing; an existing one only gains the commit-stamp column."""
    out = {}
    for name, spec in _specs().items():
        stamped = STAMP_COLUMN in spec.schema.column_names
        table = catalog.create_table_if_not_exists(
            f"{namespace}.{name}",
            spec.schema,
            partition_spec=spec.partition_spec,
            sort_order=spec.sort_order,
            properties={**COMMON_PROPERTIES, STAMPED_SINCE_KEY: "0"} if stamped else COMMON_PROPERTIES,
        )
        if stamped and ensure_stamp_column(table):
            table = table.refresh()
        out[name] = table
    return out


def load_table(catalog: Catalog, namespace: str, name: str) -> Table:
    """Raises:
    TableMissingError: the table was never created.
    """
    try:
        return catalog.load_table(f"{namespace}.{name}")
    except NoSuchTableError as exc:
        raise TableMissingError(f"{namespace}.{name}") from exc
