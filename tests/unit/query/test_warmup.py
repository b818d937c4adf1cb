"""Pure logic of warm-up: which files fit the row budget (newest data first)."""

from __future__ import annotations

import numpy as np

from k2.query.files import FileSet, Layout
from k2.query.warmup import newest_within


def fileset(records: list[int], ts_max: list[int]) -> FileSet:
    empty = FileSet.build(1, [], Layout(None, None, None, {}))
    n = len(records)
    return FileSet(
        1, np.array([f"f{i}" for i in range(n)], dtype=object), np.array(records, dtype=np.int64),
        *(np.zeros(n, dtype=a.dtype) for a in (empty.spec, empty.day, empty.bucket, empty.buckets)),
        np.zeros(n, dtype=np.int64), np.array(ts_max, dtype=np.int64),
        np.array([""] * n, dtype=object), np.array(["~"] * n, dtype=object),
        np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.int32),
    )  # fmt: skip


def test_newest_files_first_within_the_budget() -> None:
    files = fileset([100, 100, 100, 100], [10, 40, 30, 20])
    assert newest_within(files, 250).paths.tolist() == ["f1", "f2"]  # index order kept
    assert newest_within(files, 400).paths.tolist() == ["f0", "f1", "f2", "f3"]


def test_nothing_when_the_budget_is_zero_or_the_newest_file_is_too_big() -> None:
    files = fileset([500, 10], [20, 10])
    assert len(newest_within(files, 0)) == 0
    assert len(newest_within(files, 100)) == 0  # newest first: no skipping past a big file
    assert len(newest_within(fileset([], []), 100)) == 0


def test_the_warm_set_keeps_prefetched_rows_within_the_budget() -> None:
    from k2.query.warmup import WarmSet

    warm = WarmSet(250)
    assert warm.hold(fileset([100, 100], [20, 10])) == set() and warm.rows == 200
    # the next snapshot's files: the oldest data prefetched before goes (f1 before f0: older ts)
    newer = fileset([100, 100], [30, 40])
    newer.paths[:] = ["g0", "g1"]
    assert warm.hold(newer) == {"f1", "f0"} and warm.rows == 200 and len(warm) == 2
    # files compacted away are forgotten without counting; a file held again is not counted twice
    again = fileset([100], [50])
    again.paths[:] = ["g1"]
    assert warm.hold(again, {"g0"}) == set() and warm.rows == 100 and len(warm) == 1
