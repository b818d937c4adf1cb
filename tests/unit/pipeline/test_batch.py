"""One micro-batch: real Avro payloads through decode, validate (→ DLQ), checks and into the sinks."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from confluent_kafka import KafkaError, Message

from k2.config import ResilienceSettings
from k2.pipeline.batch import BatchOutcome, BatchProcessor, PipelineStats
from k2.pipeline.checkpoint import Checkpoint
from k2.pipeline.governor import dependency_breakers
from k2.resilience.degradation import DegradationManager
from k2.resilience.tiers import PriorityTiers
from k2.schemas import encode_batch
from k2.schemas.validate import Validator
from k2.state.errors import StateStoreError
from k2.stream.control import EXPIRE_MARKER, marker_key
from tests.unit.pipeline.fakes import (
    T0,
    FakeProducer,
    FakeSpill,
    RecordingChecks,
    as_native,
    sink,
    ticks,
    trades_schema,
)

SOURCE, SPILL = "k2.trades", "k2.spill.trades"
GAPS_SCHEMA = (
    pl.DataFrame(schema={"event": pl.String, "kafka_partition": pl.Int32, "kafka_offset": pl.Int64})
    .to_arrow()
    .schema
)


@pytest.fixture(autouse=True, params=["python", "native"])
def consumer(request: pytest.FixtureRequest) -> str:
    """Every test twice: with confluent-kafka's messages, and as the native consumer's columns."""
    Rig.native = request.param == "native"
    return str(request.param)


class Rig:
    native = False

    def process(self, batch: list[Message]) -> BatchOutcome:
        return self.processor(as_native(batch) if self.native else batch)

    def __init__(self) -> None:
        r = ResilienceSettings()
        self.trades, self.table = sink("trades", {SOURCE, SPILL}, trades_schema())
        gaps, _ = sink("sequence_gaps", {SOURCE, SPILL}, GAPS_SCHEMA)
        self.checks = RecordingChecks()
        self.producer = FakeProducer()
        self.stats = PipelineStats()
        self.checkpoint = Checkpoint(
            gap_sink=gaps,
            tick_sinks=[self.trades],
            checks=self.checks,
            flush_dead_letters=lambda: 0,
            commit_group_offsets=lambda end: None,
            max_rows=1000,
            max_age_s=60,
        )
        self.processor = BatchProcessor(
            topics={SOURCE: "trades", SPILL: "trades"},
            source_topics={SOURCE: "trades"},
            spill_topics={SPILL: "trades"},
            sinks_by_topic={SOURCE: self.trades, SPILL: self.trades},
            checkpoint=self.checkpoint,
            checks=self.checks,
            validator=Validator(300),
            producer=self.producer,  # type: ignore[arg-type]
            spill=FakeSpill(),  # type: ignore[arg-type]
            tiers=PriorityTiers(r),
            degradation=DegradationManager(r),
            breakers=dependency_breakers(r),
            stats=self.stats,
        )


def messages(topic: str, partition: int, first: int, payloads: list[bytes]) -> list[Message]:
    return [
        Message(topic=topic, partition=partition, offset=first + i, value=v, key=b"BHP")
        for i, v in enumerate(payloads)
    ]


def test_ticks_land_in_their_sink_with_their_kafka_lineage_and_the_read_end() -> None:
    rig = Rig()
    outcome = rig.process(messages(SOURCE, 1, 10, encode_batch("trades", ticks(["BHP"] * 3, [1, 2, 3]))))
    assert outcome.had_ticks
    assert rig.checkpoint.read_end == {(SOURCE, 1): 13}
    frozen = rig.checkpoint.freeze()
    assert frozen is not None
    frozen.commit()
    rows = rig.table.rows
    assert rows.get_column("sequence").to_list() == [1, 2, 3]
    assert rows.get_column("kafka_offset").to_list() == [10, 11, 12]
    assert set(rows.get_column("kafka_partition").to_list()) == {1}
    assert rig.stats.messages == rig.stats.written == 3 and rig.stats.by_topic == {SOURCE: 3}


def test_an_undecodable_payload_is_dead_lettered_and_its_offset_still_read() -> None:
    rig = Rig()
    good = encode_batch("trades", ticks(["BHP"] * 2, [1, 2]))
    rig.process(messages(SOURCE, 0, 0, [good[0], b"\x00garbage", good[1]]))
    assert [letter.source for letter in rig.producer.dead_letters] == ["topic=k2.trades partition=0 offset=1"]
    assert rig.trades.rows == 2 and rig.checkpoint.read_end == {(SOURCE, 0): 3}
    assert rig.stats.dead_letters == 1


def test_an_expire_marker_is_no_tick_and_reaches_the_checks_at_its_offset() -> None:
    rig = Rig()
    good = encode_batch("trades", ticks(["BHP"] * 3, [1, 2, 3]))
    batch = messages(SOURCE, 0, 0, [good[0], b"\x00garbage", EXPIRE_MARKER, good[1], good[2]])
    batch[2] = Message(topic=SOURCE, partition=0, offset=2, value=EXPIRE_MARKER, key=marker_key(123))
    rig.process(batch)
    assert rig.checks.markers == [(0, 2, 123)]
    assert sorted(rig.checks.seen) == [(0, 0), (0, 3), (0, 4)]  # the ticks keep their offsets
    assert [letter.source for letter in rig.producer.dead_letters] == ["topic=k2.trades partition=0 offset=1"]
    assert rig.trades.rows == 3 and rig.checkpoint.read_end == {(SOURCE, 0): 5}  # its offset is read
    assert rig.stats.messages == 4  # the marker is not a message of the feed


def test_a_replay_below_the_watermark_is_neither_written_nor_dead_lettered_again() -> None:
    rig = Rig()
    rig.trades.committed = {(SOURCE, 0): 2}  # the table already holds offsets 0 and 1
    good = encode_batch("trades", ticks(["BHP"] * 3, [1, 2, 3]))
    rig.process(messages(SOURCE, 0, 0, [good[0], b"junk", good[2]]))
    assert rig.producer.dead_letters == [] and rig.trades.rows == 1 and rig.stats.written == 1


def test_duplicates_are_dropped_as_the_checks_say() -> None:
    rig = Rig()
    rig.checks.duplicates = {2}
    rig.process(messages(SOURCE, 0, 0, encode_batch("trades", ticks(["BHP"] * 3, [1, 2, 3]))))
    assert rig.trades.rows == 2 and rig.stats.duplicates == 1
    assert rig.checkpoint.read_end == {(SOURCE, 0): 3}  # a duplicate's offset is read all the same


def test_back_filled_ticks_count_as_such() -> None:
    rig = Rig()
    rig.process(messages(SPILL, 0, 0, encode_batch("trades", ticks(["BHP"] * 2, [1, 2]))))
    assert rig.stats.backfilled == 2 and rig.checkpoint.read_end == {(SPILL, 0): 2}


def test_consumer_errors_and_unknown_topics_are_not_ticks() -> None:
    rig = Rig()
    eof = Message(topic=SOURCE, partition=0, offset=5, error=KafkaError(KafkaError._PARTITION_EOF))
    assert not rig.process([eof]).had_ticks
    rig.process(messages("k2.other", 0, 0, [b"x"]))
    assert rig.checkpoint.read_end == {} and rig.producer.dead_letters == []


def test_a_state_store_down_while_classifying_raises_and_buffers_nothing() -> None:
    rig = Rig()
    rig.checks.fail = True
    with pytest.raises(StateStoreError):
        rig.process(messages(SOURCE, 0, 0, encode_batch("trades", ticks(["BHP"], [1]))))
    assert rig.trades.rows == 0 and rig.checkpoint.read_end == {}


def test_a_tombstone_is_dead_lettered_not_a_row() -> None:
    rig = Rig()
    good = encode_batch("trades", ticks(["BHP"], [1]))
    rig.process([*messages(SOURCE, 0, 0, good), Message(topic=SOURCE, partition=0, offset=1, value=None)])
    assert [letter.value for letter in rig.producer.dead_letters] == [b""]
    assert rig.trades.rows == 1 and rig.checkpoint.read_end == {(SOURCE, 0): 2}


def test_the_future_is_judged_against_the_message_time_so_a_replay_years_later_agrees() -> None:
    """Ticks of 2024 read today: the message says they were produced an hour before their exchange
    time, so they are in the future however late they are read; the wall clock used to pass them."""
    payloads = encode_batch("trades", ticks(["BHP"] * 3, [1, 2, 3]))
    produced_ms = int((T0 - timedelta(hours=1)).timestamp() * 1000)
    stamps = [produced_ms, int(T0.timestamp() * 1000), produced_ms]
    batch = [
        Message(topic=SOURCE, partition=0, offset=i, value=v, key=b"BHP", timestamp=(1, stamp))
        for i, (v, stamp) in enumerate(zip(payloads, stamps, strict=True))
    ]
    rig = Rig()
    rig.process(batch)
    assert [(letter.source, letter.reason) for letter in rig.producer.dead_letters] == [
        ("topic=k2.trades partition=0 offset=0", "exchange time is in the future"),
        ("topic=k2.trades partition=0 offset=2", "exchange time is in the future"),
    ]
    assert rig.trades.rows == 1 and rig.checkpoint.read_end == {(SOURCE, 0): 3}
    frozen = rig.checkpoint.freeze()
    assert frozen is not None
    frozen.commit()
    assert "_message_ts" not in rig.table.rows.columns  # judged by, never written
