"""Idle symbols' Redis state is swept by session; live state never is (real Redis, real ingest)."""

from __future__ import annotations

import threading
import time
from datetime import date

import polars as pl
import pytest
import redis

from k2 import schemas
from k2.config import Settings, load_settings
from k2.lake import open_catalog
from k2.state import PartitionToken, RedisSequenceStore
from k2.state.model import KeyState, PartitionClock, StateKey
from k2.state.sweep import _COMPARE_AND_DELETE, _compare_and_delete, _states, sweep_idle
from tests.integration.test_pipeline import _ingest, _produce, make_trades

pytestmark = pytest.mark.integration

DAY = 20_000  # a session, days since 1970-01-01


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis.effective_url)


def _seq_keys(settings: Settings, *, namespaced: bool = False) -> set[str]:
    """Sequence keys under the prefix (``namespaced``: the ingester's, under the lake namespace)."""
    prefix = settings.redis.key_prefix + (f"{settings.lake.namespace}:" if namespaced else "")
    return {k.decode()[len(prefix) :] for k in _client(settings).scan_iter(match=f"{prefix}seq:*")}


def _commit(store: RedisSequenceStore, states: dict[StateKey, KeyState], token: list[int | None]) -> None:
    """One commit on partition 0, fenced like the pipeline's (token: the expected offset, advanced)."""
    offset = (token[0] or 0) + 1
    store.commit(states, [PartitionToken("k2.trades", 0, token[0], offset)])
    token[0] = offset


def test_idle_symbols_go_active_ones_stay(settings: Settings) -> None:
    store = RedisSequenceStore(settings.redis)
    states = {
        ("trades", "ASX", "BHP"): KeyState(DAY, 10),  # active: the newest session
        ("trades", "ASX", "OLD"): KeyState(DAY - 31, 5),  # idle 31 days: goes
        ("trades", "ASX", "EDGE"): KeyState(DAY - 30, 5),  # exactly 30: stays
        ("trades", "ASX", "HOLE"): KeyState(DAY - 40, 9, ((3, 4, 0, 0, 1),)),  # a young hole: stays
        ("quotes", "ASX", "OLD"): KeyState(DAY - 2, 5),  # quotes' newest session is its own
        ("quotes", "ASX", "NEW"): KeyState(DAY - 1, 5),
        ("trades", "SIM", "X:Y"): KeyState(DAY - 100, 1),  # another exchange's newest: stays
    }
    _commit(store, states, [None])
    store.commit({}, [], {("trades", 0): PartitionClock()})
    before = _seq_keys(settings)
    result = sweep_idle(_client(settings), settings.redis.key_prefix, 30)
    assert result.deleted == 1 and result.idle == 1 and result.scanned == 7
    assert before - _seq_keys(settings) == {"seq:trades:ASX:OLD"}
    assert "seq:tok:k2.trades:0" in _seq_keys(settings) and "seq:clk:trades:0" in _seq_keys(settings)
    assert store.load(states) == {k: v for k, v in states.items() if k != ("trades", "ASX", "OLD")}


def test_a_commit_between_judging_and_deleting_keeps_its_state(settings: Settings) -> None:
    store = RedisSequenceStore(settings.redis)
    old, key = KeyState(DAY - 60, 7), ("trades", "ASX", "BACK")
    token: list[int | None] = [None]
    _commit(store, {key: old, ("trades", "ASX", "BHP"): KeyState(DAY, 1)}, token)
    judged = [(k, v) for batch in _states(_client(settings), settings.redis.key_prefix, "trades")
              for k, v, _ in batch if k.endswith(b"BACK")]  # fmt: skip
    assert len(judged) == 1
    revived = KeyState(DAY, 1, (), DAY - 60, 7)  # the symbol trades again: a new session
    _commit(store, {key: revived}, token)
    script = _client(settings).register_script(_COMPARE_AND_DELETE)
    assert _compare_and_delete(script, judged) == 0
    assert store.load([key]) == {key: revived}


def test_sweeps_racing_commits_never_drop_live_state(settings: Settings) -> None:
    """A writer commits new sessions for its symbols while sweeps run back to back: whatever the
    interleaving, every live symbol ends with the state it last committed; idle ones go."""
    store = RedisSequenceStore(settings.redis, commit_mode="lua")
    live = [("trades", "ASX", f"L{i}") for i in range(200)]
    idle = [("trades", "ASX", f"I{i}") for i in range(200)]
    token: list[int | None] = [None]
    _commit(store, {k: KeyState(DAY - 50, 3) for k in live + idle}, token)  # all old at first
    last: dict[StateKey, KeyState] = {}
    stop = threading.Event()
    errors: list[BaseException] = []
    sweeps = [0]

    def write() -> None:
        try:
            for i, day in enumerate(range(DAY - 49, DAY + 1)):  # the live symbols move a session at a time
                # paced by the sweeps (a loaded machine must not let the writer finish before the
                # second one): a sweep runs during every 10 sessions
                deadline = time.monotonic() + 60
                while sweeps[0] < i // 10 and time.monotonic() < deadline:
                    time.sleep(0.005)
                batch = {k: KeyState(day, 1 + (day % 7)) for k in live}
                _commit(store, batch, token)
                last.update(batch)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not stop.is_set():
        sweep_idle(_client(settings), settings.redis.key_prefix, 30)
        sweeps[0] += 1
    writer.join()
    assert not errors, errors
    sweep_idle(_client(settings), settings.redis.key_prefix, 30)
    assert sweeps[0] >= 5
    assert store.load(live) == last  # nothing a commit wrote was lost
    assert store.load(idle) == {}  # 50 sessions behind: all swept


def _ingest_and_read(
    settings: Settings, frame: pl.DataFrame, **env: str
) -> tuple[int, int, list[dict[str, object]]]:
    _produce(settings, frame)
    proc = _ingest(settings, "--idle-timeout", "20", K2_LAKE__COMMIT_ROWS="200",
                   K2_PIPELINE__BATCH_MAX_MESSAGES="200", **env)  # fmt: skip
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    catalog = open_catalog(settings)
    ns = settings.lake.namespace
    trades = catalog.load_table(f"{ns}.trades").scan().to_arrow()
    assert trades.num_rows, out[-3000:]
    gaps = catalog.load_table(f"{ns}.sequence_gaps").scan().to_arrow()
    events = sorted(
        gaps.select(
            ["kind", "exchange", "symbol", "session", "first_missing", "last_missing", "event"]
        ).to_pylist(),
        key=str,
    )
    return trades.num_rows, len(set(trades.column("message_id").to_pylist())), events


LIVE = ["BHP", "RIO", "CBA"]
GONE = ["WES", "WBC"]  # trade only in the first session: swept and never back


def _session(n: int, session: date, *, seed: int) -> pl.DataFrame:
    """``make_trades`` moved to ``session`` (its exchange times too, or validation refuses them)."""
    shift = session - date(2024, 3, 11)  # make_trades' own session
    frame = make_trades(n, session=session, seed=seed).with_columns(
        pl.col("exchange_ts") + shift, pl.col("ingest_ts") + shift
    )
    return frame.with_columns(message_id=schemas.message_ids("trades", frame))


def _feed() -> pl.DataFrame:
    """Session one (all symbols), session two 40 days later (three symbols: the others go idle and
    are swept), session three (all but two: swept symbols come back), holes throughout (gap events),
    then part of session three again (duplicates to drop)."""
    first = _session(1_500, date(2024, 1, 10), seed=3)
    second = _session(900, date(2024, 2, 19), seed=4).filter(pl.col("symbol").is_in(LIVE))
    third = _session(900, date(2024, 2, 20), seed=5).filter(~pl.col("symbol").is_in(GONE))
    frame = pl.concat([first, second, third]).filter(pl.col("sequence") % 37 != 5)
    return pl.concat([frame, frame.tail(400).head(200)])


@pytest.mark.timeout(900)  # two ingests
def test_ingest_with_sweeps_gives_the_same_rows_and_gaps(settings: Settings) -> None:
    """The same feed ingested on Redis with a sweep after every commit and with none: the same rows,
    exactly once, and the same gap events; the idle symbols' keys are gone only in the first."""
    redis_state = {**settings.model_dump(), "state": {**settings.state.model_dump(), "backend": "redis"}}
    swept = load_settings(**redis_state)
    plain = load_settings(**{**redis_state, "data_dir": settings.data_dir.parent / "plain",
                             "kafka": {**settings.kafka.model_dump(), "topic_prefix": settings.kafka.topic_prefix + "p."},
                             "redis": {**settings.redis.model_dump(), "key_prefix": settings.redis.key_prefix + "p:"},
                             "pipeline": {**settings.pipeline.model_dump(), "group_id": settings.pipeline.group_id + "p"}})  # fmt: skip
    frame = _feed()
    unique = frame.unique("message_id").height
    a = _ingest_and_read(swept, frame, K2_STATE__SWEEP_EVERY_S="0.01", K2_STATE__IDLE_DAYS="30")
    b = _ingest_and_read(plain, frame, K2_STATE__SWEEP_EVERY_S="0")
    assert a[0] == a[1] == unique and b[0] == b[1] == unique  # exactly once, both ways
    assert a[2] == b[2] and a[2], "the sweep changed the gap events"
    swept_keys, plain_keys = _seq_keys(swept, namespaced=True), _seq_keys(plain, namespaced=True)
    for symbol in GONE:
        assert f"seq:trades:SIM:{symbol}" not in swept_keys and f"seq:trades:SIM:{symbol}" in plain_keys
    for symbol in set(frame["symbol"].unique().to_list()) - set(GONE):
        assert f"seq:trades:SIM:{symbol}" in swept_keys
