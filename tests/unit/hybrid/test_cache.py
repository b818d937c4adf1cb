from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl

from k2.config.hybrid import HybridSettings
from k2.hybrid.cache import NEVER_COMMITTED, TailCache
from k2.hybrid.decoder import TailDecoder
from k2.schemas import encode_batch
from k2.stream.control import EXPIRE_MARKER
from tests.unit.hybrid.conftest import T0, FakeSource, ticks

T = "k2.trades"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fill(source: FakeSource, partition: int, count: int, first_seq: int = 1) -> None:
    frame = ticks("trades", ["BHP"] * count, list(range(first_seq, first_seq + count)))
    for value in encode_batch("trades", frame):
        source.append(T, partition, value)


def cache(source: FakeSource, clock: Clock | None = None, **settings: object) -> TailCache:
    return TailCache(HybridSettings(**settings), source, TailDecoder(300.0), {T: "trades"},  # type: ignore[arg-type]
                     clock=clock or Clock())  # fmt: skip


def offsets(read_frames: list[pl.DataFrame]) -> list[int]:
    return pl.concat(read_frames)["kafka_offset"].to_list() if read_frames else []


def test_reads_from_the_start_to_the_high_watermark_then_only_what_is_new() -> None:
    source = FakeSource({T: 1})
    fill(source, 0, 10)
    c = cache(source)
    part = c.read({(T, 0): 4}).parts[(T, 0)]
    assert (part.start, part.end, part.high_watermark) == (4, 10, 10)
    assert offsets(part.frames) == list(range(4, 10))
    fill(source, 0, 3, first_seq=11)
    polled = source.calls["poll"]
    part = c.read({(T, 0): 4}).parts[(T, 0)]
    assert offsets(part.frames) == list(range(4, 13)) and source.calls["position"] == 1
    assert source.calls["poll"] - polled <= 2


def test_a_newer_snapshot_trims_and_one_beyond_the_cache_repositions() -> None:
    source = FakeSource({T: 1})
    fill(source, 0, 20)
    clock = Clock()
    c = cache(source, clock, trim_grace_s=0)
    c.read({(T, 0): 0})
    clock.now += 1
    part = c.read({(T, 0): 15}).parts[(T, 0)]
    assert offsets(part.frames) == list(range(15, 20)) and c.stats()["rows"] == 5
    fill(source, 0, 10, first_seq=21)
    part = c.read({(T, 0): 28}).parts[(T, 0)]
    assert offsets(part.frames) == [28, 29] and part.end == 30


def test_a_partition_the_snapshot_never_covered_starts_at_the_oldest_kept_offset() -> None:
    source = FakeSource({T: 1})
    fill(source, 0, 5)
    source.low[(T, 0)] = 2
    part = cache(source).read({(T, 0): NEVER_COMMITTED}).parts[(T, 0)]
    assert part.start == 2 and offsets(part.frames) == [2, 3, 4] and part.truncated is None


def test_offsets_deleted_before_iceberg_took_them_are_reported() -> None:
    source = FakeSource({T: 1})
    fill(source, 0, 5)
    source.low[(T, 0)] = 3
    read = cache(source).read({(T, 0): 1})
    assert read.truncated and "retention" in read.reasons[0]
    assert offsets(read.parts[(T, 0)].frames) == [3, 4]


def test_undecodable_messages_advance_the_tail_without_rows() -> None:
    source = FakeSource({T: 1})
    fill(source, 0, 2)
    source.append(T, 0, b"\x00garbage")
    source.append(T, 0, None)  # a tombstone
    fill(source, 0, 1, first_seq=3)
    part = cache(source).read({(T, 0): 0}).parts[(T, 0)]
    assert part.end == 5 and offsets(part.frames) == [0, 1, 4]


def test_a_full_cache_answers_a_prefix_and_says_why() -> None:
    source = FakeSource({T: 2})
    fill(source, 0, 1_500)
    c = cache(source, max_tail_messages=1_000)
    part = c.read({(T, 0): 0}).parts[(T, 0)]
    assert part.end == 1_000 and part.high_watermark == 1_500
    assert part.truncated is not None and part.truncated.startswith("max_tail_messages")
    assert offsets(part.frames) == list(range(1_000))  # gap-free: the stream up to `end`


def test_a_paused_partition_resumes_once_a_snapshot_frees_room() -> None:
    source = FakeSource({T: 1})
    fill(source, 0, 1_500)
    clock = Clock()
    c = cache(source, clock, max_tail_messages=1_000, trim_grace_s=0)
    c.read({(T, 0): 0})
    clock.now += 1
    part = c.read({(T, 0): 900}).parts[(T, 0)]  # Iceberg now holds 0..899
    assert part.truncated is None and part.end == 1_500
    assert offsets(part.frames) == list(range(900, 1_500))


def test_idle_and_least_recently_used_partitions_are_dropped() -> None:
    source = FakeSource({T: 3})
    for p in range(3):
        fill(source, p, 4)
    clock = Clock()
    c = cache(source, clock, max_partitions=2, idle_partition_s=60)
    c.read({(T, 0): 0})
    clock.now += 1
    c.read({(T, 1): 0})
    clock.now += 1
    c.read({(T, 2): 0})  # a third partition: the least recently used one goes
    assert set(source.positions) == {(T, 1), (T, 2)} and c.stats()["partitions"] == 2
    clock.now += 120
    c.read({(T, 2): 0})
    assert set(source.positions) == {(T, 2)}


def test_without_wait_the_answer_is_what_the_cache_holds() -> None:
    source = FakeSource({T: 1})
    fill(source, 0, 3)
    c = cache(source)
    c.read({(T, 0): 0})
    fill(source, 0, 2, first_seq=4)
    part = c.read({(T, 0): 0}, wait=False).parts[(T, 0)]
    assert part.end == 3 and part.high_watermark == 5 and part.truncated is None
    assert c.pump() == 2
    assert c.read({(T, 0): 0}, wait=False).parts[(T, 0)].end == 5


def test_a_broker_slower_than_the_read_timeout_gives_a_prefix_and_the_reason() -> None:
    source = FakeSource({T: 1})
    fill(source, 0, 3)
    real = source.high_watermarks
    source.high_watermarks = lambda tps: {tp: hi + 2 for tp, hi in real(tps).items()}  # type: ignore[method-assign]
    part = TailCache(HybridSettings(read_timeout_s=0.05, poll_timeout_s=0.01), source, TailDecoder(300.0),
                     {T: "trades"}).read({(T, 0): 0}).parts[(T, 0)]  # fmt: skip
    assert part.end == 3 and part.high_watermark == 5
    assert part.truncated is not None and part.truncated.startswith("read_timeout")
    source.high_watermarks = real  # type: ignore[method-assign]


def test_the_tail_skips_expire_markers_without_counting_them_as_dead_letters() -> None:
    good = encode_batch("trades", ticks("trades", ["BHP"] * 3, [1, 2, 3]))
    values: list[bytes | None] = [good[0], EXPIRE_MARKER, good[1], good[2]]
    decoded = TailDecoder(300.0).decode("trades", values, np.zeros(4, np.int32), np.arange(4, dtype=np.int64))
    assert decoded.rows["kafka_offset"].to_list() == [0, 2, 3]
    assert decoded.dead_letters == 0


def test_the_tail_judges_the_future_by_each_message_time_as_the_pipeline_does() -> None:
    """The boundary stays exact only if the tail drops the rows the pipeline dead-letters: both
    judge "in the future" against the message's own time, never their own clocks."""
    source = FakeSource({T: 1})
    values = encode_batch("trades", ticks("trades", ["BHP"] * 3, [1, 2, 3]))  # at T0, T0+1 s, T0+2 s
    early_ms = int((T0 - timedelta(hours=1)).timestamp() * 1000)  # produced an hour before them
    for value, stamp in zip(values, [early_ms, int(T0.timestamp() * 1000), None], strict=True):
        source.append(T, 0, value, stamp)
    part = cache(source).read({(T, 0): 0}).parts[(T, 0)]
    assert offsets(part.frames) == [1, 2]  # offset 2 has no time: judged by the clock, valid
    assert part.end == 3  # the dropped tick still takes its offset


def test_the_decoder_without_message_times_judges_by_the_clock() -> None:
    values: list[bytes | None] = list(encode_batch("trades", ticks("trades", ["BHP"] * 2, [1, 2])))
    decoded = TailDecoder(300.0).decode("trades", values, np.zeros(2, np.int32), np.arange(2, dtype=np.int64))
    assert decoded.rows["kafka_offset"].to_list() == [0, 1] and decoded.dead_letters == 0


def test_the_prefetch_pump_drops_idle_partitions_without_any_query() -> None:
    source = FakeSource({T: 1})
    fill(source, 0, 5)
    clock = Clock()
    c = cache(source, clock, idle_partition_s=60)
    c.read({(T, 0): 0})  # warm-up: then no query comes
    fill(source, 0, 5, first_seq=6)
    c.pump()
    assert c.stats()["rows"] == 10
    clock.now += 61
    c.pump()  # it used to append every tick to the warmed tail, forever
    assert c.stats() == {"partitions": 0, "rows": 0, "bytes": 0}
