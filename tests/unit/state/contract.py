"""Behaviour every SequenceStore and DedupStore must have; subclassed per backend.

A subclass provides the ``open_store`` fixture: a factory that opens a *new* store object on the
same stored data each time it is called (a restart, or a second consumer).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np
import polars as pl
import pytest

from k2.state.base import DedupStore, PartitionToken, SequenceStore, batch_tokens
from k2.state.errors import StaleStateError
from k2.state.ids import id_bytes
from k2.state.model import KeyState, PartitionClock
from k2.state.synthetic import make_batch
from k2.state.tracker import SequenceTracker
from tests.unit.state.streams import event_tuples, faulty_stream

__all__ = ["DedupStoreContract", "SequenceStoreContract"]

A = ("trades", "ASX", "BHP")
B = ("trades", "ASX", "CBA")
RICH = KeyState(
    19_800, 120, ((5, 9, 5, 9, 1_700_000_000_000_000), (50, 60, 0, 0, 0)), 19_799, 77, ((3, 3, 3, 4, 1),)
)


class SequenceStoreContract:
    open_store: Callable[[], SequenceStore]

    def test_unknown_keys_and_tokens_are_absent(self, open_store: Callable[[], SequenceStore]) -> None:
        with open_store() as store:
            assert store.load([A, B]) == {}
            assert store.load([]) == {}
            assert store.token("k2.trades", 0) is None

    def test_commit_then_load_round_trips_and_advances_tokens(
        self, open_store: Callable[[], SequenceStore]
    ) -> None:
        with open_store() as store:
            store.commit({A: RICH, B: KeyState(19_800, 3)}, [PartitionToken("k2.trades", 0, None, 10)])
            assert store.load([A, B, ("trades", "ASX", "NONE")]) == {A: RICH, B: KeyState(19_800, 3)}
            assert store.token("k2.trades", 0) == 10
            store.commit({A: KeyState(19_801, 1)}, [PartitionToken("k2.trades", 0, 10, 25)])
            assert store.load([A])[A] == KeyState(19_801, 1)
            assert store.token("k2.trades", 0) == 25

    def test_partition_clocks_round_trip_with_the_states(
        self, open_store: Callable[[], SequenceStore]
    ) -> None:
        clock = PartitionClock(1_700_000_000_000_000, (("ASX", "BHP", 1_699_999_999_000_000),))
        with open_store() as store:
            assert store.load_clocks([("trades", 0)]) == {}
            store.commit({A: RICH}, [PartitionToken("k2.trades", 0, None, 3)], {("trades", 0): clock})
        with open_store() as store:
            assert store.load_clocks([("trades", 0), ("trades", 1)]) == {("trades", 0): clock}
            with pytest.raises(StaleStateError):
                store.commit({}, [PartitionToken("k2.trades", 0, None, 9)], {("trades", 0): PartitionClock()})
            assert store.load_clocks([("trades", 0)]) == {("trades", 0): clock}

    def test_stale_token_is_refused_and_nothing_is_written(
        self, open_store: Callable[[], SequenceStore]
    ) -> None:
        with open_store() as store:
            store.commit({A: KeyState(19_800, 5)}, [PartitionToken("k2.trades", 0, None, 10)])
            store.commit({}, [PartitionToken("k2.trades", 1, None, 4)])
            for bad in (None, 9, 11):
                with pytest.raises(StaleStateError) as info:
                    store.commit(
                        {A: KeyState(19_800, 99), B: KeyState(19_800, 1)},
                        [PartitionToken("k2.trades", 1, 4, 8), PartitionToken("k2.trades", 0, bad, 20)],
                    )
                assert (info.value.partition, info.value.expected, info.value.actual) == (0, bad, 10)
        with open_store() as again:
            assert again.load([A, B]) == {A: KeyState(19_800, 5)}
            assert again.token("k2.trades", 0) == 10 and again.token("k2.trades", 1) == 4

    def test_a_new_store_object_sees_committed_state(self, open_store: Callable[[], SequenceStore]) -> None:
        with open_store() as store:
            store.commit({A: RICH}, [PartitionToken("k2.trades", 3, None, 7)])
        with open_store() as restarted:
            assert restarted.load([A]) == {A: RICH}
            assert restarted.token("k2.trades", 3) == 7

    def test_rebalanced_away_consumer_is_fenced_and_sees_the_new_owner(
        self, open_store: Callable[[], SequenceStore]
    ) -> None:
        with open_store() as old, open_store() as new:
            old.commit({A: KeyState(19_800, 5)}, [PartitionToken("k2.trades", 0, None, 10)])
            assert old.load([A]) == {A: KeyState(19_800, 5)}  # now cached by the old owner
            assert new.token("k2.trades", 0) == 10
            new.commit({A: KeyState(19_800, 9)}, [PartitionToken("k2.trades", 0, 10, 14)])
            with pytest.raises(StaleStateError):
                old.commit({A: KeyState(19_800, 6)}, [PartitionToken("k2.trades", 0, 10, 11)])
            assert old.load([A]) == {A: KeyState(19_800, 9)}
            assert new.load([A]) == {A: KeyState(19_800, 9)}

    def test_crash_between_iceberg_and_state_commit_is_rebuilt_by_replay(
        self, open_store: Callable[[], SequenceStore]
    ) -> None:
        rows = faulty_stream(np.random.default_rng(5), keys=6)
        stream = make_batch("trades", rows, partitions=2)
        cuts = [*range(0, stream.height, 97), stream.height]
        tracker, topic = SequenceTracker("x"), "x"

        def run(crash_after: int | None) -> tuple[list, list, list]:
            # each run its own kind and topic, so the runs share the store but not its keys
            nonlocal tracker, topic
            tracker = SequenceTracker(f"run{crash_after}", reorder_window=8)
            topic = f"k2.run{crash_after}"
            lake_verdicts: list[list] = []
            lake_gaps: list = []
            lake_offsets: dict[int, int] = {}  # what the Iceberg snapshot records
            store = open_store()
            expected: dict[int, int | None] = {}
            for n, (a, b) in enumerate(pairwise(cuts)):
                batch = stream.slice(a, b - a)
                result = tracker.classify(batch, store.load(tracker.keys(batch)))
                lake_verdicts.append(
                    list(zip(batch["_offset"], batch["_partition"], result.verdicts, strict=True))
                )
                lake_gaps.extend(event_tuples(result.gaps))
                tokens = batch_tokens(topic, batch, expected)
                lake_offsets.update({t.partition: t.offset for t in tokens})  # the "Iceberg commit"
                if n == crash_after:
                    store.close()  # crash: the state commit never happens
                    store = open_store()
                    rebuild(store, lake_offsets)
                    expected = {p: store.token(topic, p) for p in lake_offsets}
                    continue
                store.commit(result.states, tokens)
                expected.update({t.partition: t.offset for t in tokens})
            states = store.load(tracker.keys(stream))
            store.close()
            return lake_verdicts, lake_gaps, sorted((k[1:], v) for k, v in states.items())

        def rebuild(store: SequenceStore, lake_offsets: dict[int, int]) -> None:
            """Replay Kafka from the store's tokens up to the lake's offsets, writing no rows."""
            for p, end in lake_offsets.items():
                start = store.token(topic, p) or 0
                part = stream.filter((stream["_partition"] == p) & (stream["_offset"] >= start))
                part = part.filter(part["_offset"] < end)
                if part.is_empty():
                    continue
                # replay in other batch boundaries than the original run: verdicts must not care
                for a in range(0, part.height, 41):
                    piece = part.slice(a, 41)
                    result = tracker.classify(piece, store.load(tracker.keys(piece)))
                    store.commit(result.states, batch_tokens(topic, piece, {p: store.token(topic, p)}))

        clean = run(None)
        for crash_after in (0, 3, len(cuts) - 2):
            assert run(crash_after) == clean
        assert clean[1], "the stream should have produced gap events"


class DedupStoreContract:
    open_store: Callable[[], DedupStore]

    def test_empty_store_contains_nothing(self, open_store: Callable[[], DedupStore]) -> None:
        with open_store() as store:
            assert store.contains(["a" * 32, "b" * 32], [1, 2]) == [False, False]
            assert store.contains([], [1]) == []
            assert store.generations() == [] and store.tokens() == {}

    def test_add_contains_by_generation_and_drop(self, open_store: Callable[[], DedupStore]) -> None:
        ids = [f"{i:032x}" for i in range(10)]
        with open_store() as store:
            store.add({5: ids[:4], 6: ids[4:8]}, [PartitionToken("k2.trades", 0, None, 8)], drop_before=3)
            assert store.contains(ids, [5, 6]) == [True] * 8 + [False] * 2
            assert store.contains(ids, [6]) == [False] * 4 + [True] * 4 + [False] * 2
            assert sorted(store.ids(5)) == ids[:4]
            assert store.generations() == [5, 6]
            assert store.tokens() == {("k2.trades", 0): 8}
            store.add({7: ids[8:]}, [PartitionToken("k2.trades", 0, 8, 10)], drop_before=6)
            assert store.generations() == [6, 7]
            assert store.contains(ids, [5, 6, 7]) == [False] * 4 + [True] * 6
        with open_store() as again:
            assert again.tokens() == {("k2.trades", 0): 10}
            assert sorted(again.ids(7)) == ids[8:]

    def test_ids_given_as_their_16_byte_keys_are_the_same_ids(
        self, open_store: Callable[[], DedupStore]
    ) -> None:
        """The dedup's commit hands the store the keys it computed, not the hex text again."""
        ids = [f"{i:02x}" * 16 for i in range(0, 250, 7)]
        with open_store() as store:
            store.add({3: id_bytes(ids[:20])}, [PartitionToken("k2.trades", 0, None, 20)], drop_before=0)
            store.add({3: pl.Series(ids[20:])}, [PartitionToken("k2.trades", 0, 20, 36)], drop_before=0)
            assert sorted(store.ids(3)) == sorted(ids)
            assert store.contains([*ids, "ff" * 16], [3]) == [True] * len(ids) + [False]
            assert store.contains(id_bytes(ids[:2]), [3]) == [True, True]

    def test_stale_token_writes_nothing(self, open_store: Callable[[], DedupStore]) -> None:
        with open_store() as store:
            store.add({1: ["a" * 32]}, [PartitionToken("k2.trades", 0, None, 5)], drop_before=0)
            with pytest.raises(StaleStateError) as info:
                store.add({2: ["b" * 32]}, [PartitionToken("k2.trades", 0, 4, 9)], drop_before=2)
            assert info.value.actual == 5
            assert store.generations() == [1]
            assert store.contains(["a" * 32, "b" * 32], [1, 2]) == [True, False]
            assert store.tokens() == {("k2.trades", 0): 5}
