from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform
from pyiceberg.types import DecimalType, IntegerType, LongType, NestedField, StringType, TimestamptzType

from k2.lake.tables import COMMON_PROPERTIES

SCHEMA = Schema(
    NestedField(1, "symbol", StringType(), required=True),
    NestedField(2, "exchange_ts", TimestamptzType(), required=True),
    NestedField(3, "sequence", LongType(), required=True),
    NestedField(4, "price", DecimalType(18, 6), required=True),
    NestedField(5, "kafka_partition", IntegerType(), required=True),
    NestedField(6, "kafka_offset", LongType(), required=True),
)


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    cat = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    cat.create_namespace("k2")
    return cat


@pytest.fixture
def table(catalog: SqlCatalog) -> Table:
    return catalog.create_table(
        "k2.ticks",
        SCHEMA,
        partition_spec=PartitionSpec(
            PartitionField(2, 1000, DayTransform(), "day"), PartitionField(1, 1001, BucketTransform(4), "b")
        ),
        sort_order=SortOrder(SortField(1, IdentityTransform()), SortField(2, IdentityTransform())),
        properties=COMMON_PROPERTIES,
    )


def rows(start: int, n: int, partition: int = 0, symbols: tuple[str, ...] = ("BHP", "RIO")) -> pa.Table:
    t0 = datetime(2024, 3, 10, 23, 0, tzinfo=UTC)
    return pa.table(
        {
            "symbol": [symbols[i % len(symbols)] for i in range(start, start + n)],
            "exchange_ts": [t0 + timedelta(seconds=i) for i in range(start, start + n)],
            "sequence": list(range(start, start + n)),
            "price": [Decimal("10.5") + i for i in range(start, start + n)],
            "kafka_partition": [partition] * n,
            "kafka_offset": list(range(start, start + n)),
        },
        schema=SCHEMA.as_arrow(),
    )
