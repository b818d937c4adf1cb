from __future__ import annotations

import polars as pl

from k2.hybrid.segment import TailSegment


def rows(first: int, end: int) -> pl.DataFrame:
    return pl.DataFrame({"kafka_offset": list(range(first, end)), "x": list(range(first, end))},
                        schema={"kafka_offset": pl.Int64, "x": pl.Int64})  # fmt: skip


def offsets(seg: TailSegment, start: int | None = None) -> list[int]:
    frames = seg.frames(start)
    return pl.concat(frames)["kafka_offset"].to_list() if frames else []


def test_appends_trims_and_slices() -> None:
    seg = TailSegment(("t", 0), 10)
    for lo in range(10, 60, 5):
        seg.append(rows(lo, lo + 5), lo, lo + 5)
    assert (seg.base, seg.end, seg.rows) == (10, 60, 50)
    assert offsets(seg, 33) == list(range(33, 60))
    seg.trim(22)
    assert seg.base == 22 and offsets(seg) == list(range(22, 60))
    seg.trim(5)  # never below the base
    assert seg.base == 22


def test_chunks_merge_like_a_binary_counter() -> None:
    seg = TailSegment(("t", 0), 0)
    for lo in range(0, 1000):
        seg.append(rows(lo, lo + 1), lo, lo + 1)
    assert len(seg.frames()) <= 11  # log2(1000) + 1
    assert offsets(seg) == list(range(1000))


def test_dead_letters_move_the_end_without_rows() -> None:
    seg = TailSegment(("t", 0), 0)
    seg.append(rows(0, 3), 0, 5)  # offsets 3 and 4 were not ticks
    assert seg.end == 5 and seg.rows == 3
    seg.append(rows(0, 0), 5, 6)
    assert seg.end == 6
    seg.append(rows(2, 4), 2, 4)  # stale: behind the end
    assert seg.rows == 3


def test_covers_and_reset() -> None:
    seg = TailSegment(("t", 0), 10)
    seg.append(rows(10, 20), 10, 20)
    assert seg.covers(10) and seg.covers(20) and not seg.covers(9) and not seg.covers(21)
    seg.reset(50)
    assert (seg.base, seg.end, seg.rows) == (50, 50, 0) and seg.frames() == []


def test_rows_a_recent_query_still_needs_survive_a_newer_start() -> None:
    seg = TailSegment(("t", 0), 0)
    seg.append(rows(0, 30), 0, 30)
    seg.request(0, now=100.0, grace_s=5.0)
    seg.request(20, now=101.0, grace_s=5.0)  # a newer snapshot, but a query at 0 ran a second ago
    assert seg.base == 0
    seg.request(20, now=110.0, grace_s=5.0)
    assert seg.base == 20 and offsets(seg) == list(range(20, 30))
