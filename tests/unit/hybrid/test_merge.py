from __future__ import annotations

from datetime import timedelta

import polars as pl

from k2.hybrid.decoder import tail_schema
from k2.hybrid.merge import merge, select_tail
from tests.unit.hybrid.conftest import T0, ticks

SCHEMA = tail_schema("trades")


def lineage(frame: pl.DataFrame, first: int = 0) -> pl.DataFrame:
    return frame.with_columns(
        kafka_partition=pl.lit(0, dtype=pl.Int32),
        kafka_offset=pl.int_range(first, first + frame.height, dtype=pl.Int64),
    )


def test_select_tail_filters_symbols_and_window_across_chunks() -> None:
    a = lineage(ticks("trades", ["A", "B", "A"], [1, 1, 2]))
    b = lineage(ticks("trades", ["A", "B"], [3, 2], seconds=[3.0, 4.0]), 3)
    start = int((T0 + timedelta(seconds=1)).timestamp() * 1e6)
    end = int((T0 + timedelta(seconds=4)).timestamp() * 1e6)
    got = select_tail([a, b], ["A"], start, end)
    assert got is not None and got["sequence"].to_list() == [2, 3]
    assert select_tail([a, b], ["Z"], None, None) is None
    assert select_tail([], ["A"], None, None) is None


def test_merge_drops_repeats_in_the_tail_and_of_history() -> None:
    history = lineage(ticks("trades", ["A", "A"], [1, 2]))
    tail = lineage(ticks("trades", ["A", "A", "A", "A"], [2, 3, 3, 4], seconds=[1.0, 2.0, 2.0, 3.0]), 2)
    merged = merge(history, tail, SCHEMA)
    assert merged.rows["sequence"].to_list() == [1, 2, 3, 4]
    assert merged.rows["committed"].to_list() == [True, True, False, False]
    assert (merged.tail_rows, merged.duplicates) == (2, 2)


def test_a_repeat_by_key_alone_or_by_message_id_alone_is_dropped() -> None:
    history = lineage(ticks("trades", ["A"], [1]))
    same_key = lineage(ticks("trades", ["A"], [1]).with_columns(message_id=pl.lit("f" * 32)), 1)
    same_id = lineage(ticks("trades", ["A"], [9]).with_columns(message_id=history["message_id"]), 2)
    merged = merge(history, pl.concat([same_key, same_id]), SCHEMA)
    assert merged.rows.height == 1 and merged.duplicates == 2


def test_interleaved_tail_rows_are_merged_in_exchange_time_order() -> None:
    history = lineage(ticks("trades", ["A", "A", "A"], [1, 2, 4], seconds=[0.0, 1.0, 3.0]))
    late = lineage(ticks("trades", ["A", "A"], [5, 3], seconds=[4.0, 2.0]), 3)  # 3 arrives late
    merged = merge(history, late, SCHEMA)
    assert merged.rows["sequence"].to_list() == [1, 2, 3, 4, 5]
    assert merged.rows["committed"].to_list() == [True, True, False, True, False]


def test_history_alone_tail_alone_and_nothing() -> None:
    history = lineage(ticks("trades", ["A"], [1]))
    assert merge(history, None, SCHEMA).rows.height == 1
    tail = lineage(ticks("trades", ["A", "A"], [2, 2]))
    only = merge(None, tail, SCHEMA)
    assert only.rows.height == 1 and only.duplicates == 1 and only.rows.columns == [*SCHEMA, "committed"]
    empty = merge(None, None, SCHEMA)
    assert empty.rows.height == 0 and empty.rows.schema["committed"] == pl.Boolean
