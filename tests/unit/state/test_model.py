"""State serialisation and the small value types."""

from __future__ import annotations

import polars as pl
import pytest

from k2.state.base import PartitionToken, batch_tokens
from k2.state.model import KeyState, decode_state, encode_state
from k2.state.synthetic import make_batch
from tests.unit.state.streams import D0

STATES = [
    KeyState(19_800, 0),
    KeyState(19_800, 2**40),
    KeyState(19_800, 120, ((5, 9, 5, 9, 1_700_000_000_000_000), (50, 60, 0, 0, 0))),
    KeyState(19_801, 3, (), 19_800, 77, ((3, 3, 3, 4, 1),)),
    KeyState(
        19_805, 3, (), 19_804, 7, (), ((19_803, 12, ()), (19_800, 9, ((2, 4, 2, 5, 7), (5, 5, 2, 5, 7))))
    ),
    KeyState(19_805, 0, (), None, 0, (), ((19_801, 1, ()),)),
]


@pytest.mark.parametrize("state", STATES)
def test_round_trip(state: KeyState) -> None:
    assert decode_state(encode_state(state)) == state


def test_clean_state_is_33_bytes_and_each_range_40() -> None:
    assert len(encode_state(STATES[0])) == 33
    assert len(encode_state(STATES[2])) == 33 + 2 * 40
    # older sessions: a count, then 16 bytes each plus their ranges
    assert len(encode_state(STATES[5])) == 33 + 4 + 16
    assert len(encode_state(STATES[4])) == 33 + 4 + 2 * 16 + 2 * 40


def test_a_state_without_older_sessions_keeps_the_version_1_bytes() -> None:
    assert encode_state(STATES[3])[0] == 1
    assert encode_state(STATES[4])[0] == 2


def test_rejects_foreign_bytes() -> None:
    with pytest.raises(ValueError):
        decode_state(b"\x09" + encode_state(STATES[0])[1:])
    with pytest.raises(ValueError):
        decode_state(encode_state(STATES[2])[:-1])
    for cut in (1, 17, 40):  # truncated inside the older sessions
        with pytest.raises(ValueError):
            decode_state(encode_state(STATES[4])[:-cut])
    with pytest.raises(ValueError):
        decode_state(encode_state(STATES[4]) + b"\0")


def test_open_gaps_counts_a_split_gap_once() -> None:
    st = KeyState(1, 100, ((5, 6, 5, 9, 0), (8, 9, 5, 9, 0), (20, 21, 0, 0, 0)), 0, 9, ((1, 1, 1, 1, 0),))
    assert st.open_gaps() == 2
    assert KeyState(1, 1).open_gaps() == 0
    assert STATES[4].open_gaps() == 1  # one gap of an older session, split in two


def test_batch_tokens_are_next_offsets_per_partition() -> None:
    rows = [("ASX", s, D0, 1) for s in ("A", "B", "C", "D", "E", "F")]
    batch = make_batch("trades", rows, partitions=2, first_offsets={0: 100, 1: 7})
    tokens = batch_tokens("k2.trades", batch, {0: 100})
    ends = batch.group_by("_partition").agg(pl.col("_offset").max() + 1).sort("_partition").rows()
    assert [(t.partition, t.offset) for t in tokens] == ends
    assert tokens[0] == PartitionToken("k2.trades", 0, 100, ends[0][1])
    assert tokens[1].expected is None
    assert batch_tokens("k2.trades", batch.clear(), {}) == []
