"""The embedded (SQLite) stores against the store contracts."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from k2.state.base import PartitionToken
from k2.state.embedded import _SEQ_SCHEMA, EmbeddedDedupStore, EmbeddedSequenceStore, _Sqlite
from k2.state.errors import StateCorruptError, StateStoreError
from k2.state.model import KeyState
from tests.unit.state.contract import DedupStoreContract, SequenceStoreContract


class TestEmbeddedSequenceStore(SequenceStoreContract):
    @pytest.fixture(params=[True, False], ids=["cached", "uncached"])
    def open_store(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> Callable[[], EmbeddedSequenceStore]:
        return lambda: EmbeddedSequenceStore(tmp_path / "state", cache=request.param)


class TestEmbeddedDedupStore(DedupStoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> Callable[[], EmbeddedDedupStore]:
        return lambda: EmbeddedDedupStore(tmp_path / "state", "trades")


def test_cache_is_dropped_when_another_process_commits(tmp_path: Path) -> None:
    key = ("trades", "ASX", "BHP")
    mine = EmbeddedSequenceStore(tmp_path)
    other = EmbeddedSequenceStore(tmp_path)
    mine.commit({key: KeyState(1, 1)}, [PartitionToken("t", 0, None, 1)])
    other.commit({key: KeyState(1, 7)}, [PartitionToken("t", 1, None, 1)])  # another partition's token
    # mine's own next commit must not re-validate its stale cache by reading the new token set
    mine.commit({}, [PartitionToken("t", 0, 1, 2)])
    assert mine.load([key]) == {key: KeyState(1, 7)}
    uncached = EmbeddedSequenceStore(tmp_path, cache=False)
    assert uncached.load([key]) == {key: KeyState(1, 7)}
    uncached.commit({key: KeyState(1, 8)}, [PartitionToken("t", 1, 1, 2)])
    assert uncached.load([key]) == {key: KeyState(1, 8)}


def test_namespaces_do_not_share_ids(tmp_path: Path) -> None:
    trades = EmbeddedDedupStore(tmp_path, "trades")
    quotes = EmbeddedDedupStore(tmp_path, "quotes")
    trades.add({1: ["a" * 32]}, [], drop_before=0)
    assert quotes.contains(["a" * 32], [1]) == [False]
    assert trades.contains(["a" * 32], [1]) == [True]


@pytest.mark.parametrize("store", [EmbeddedSequenceStore, EmbeddedDedupStore])
def test_a_file_that_is_not_a_database_is_corrupt_not_retryable(tmp_path: Path, store: type) -> None:
    name = "sequence.sqlite" if store is EmbeddedSequenceStore else "dedup.sqlite"
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / name).write_bytes(b"this is not SQLite " * 500)
    with pytest.raises(StateCorruptError, match="is corrupt") as info:
        store(tmp_path) if store is EmbeddedSequenceStore else store(tmp_path, "ns")
    assert not isinstance(info.value, StateStoreError)  # the pipeline retries those; not this
    assert info.value.path == tmp_path / name


def test_damaged_pages_are_corrupt_too(tmp_path: Path) -> None:
    schema = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB);"
    path = tmp_path / "x.sqlite"
    db = _Sqlite(path, schema)
    with db.transaction() as conn:
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, b"x" * 200) for i in range(2000)])
    db.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.db.close()
    data = bytearray(path.read_bytes())
    for offset in range(4096 + 16, len(data), 97):  # scribble over every page but the header
        data[offset] = 0xA5
    path.write_bytes(bytes(data))
    with pytest.raises(StateCorruptError):
        _Sqlite(path, schema).query("SELECT count(*), sum(length(v)) FROM t")


# --- the commit log and its fold -------------------------------------------------------------


def _reference_run(tmp_path: Path, seed: int, fold_at: int) -> None:
    """Random commits by one store, loads by it and by a second object (another process), folds
    by the writer's thread and by hand: every load equals the fold of every commit so far."""
    rng = np.random.default_rng(seed)
    keys = [("trades", "ASX", f"S{i}") for i in range(60)]
    writer = EmbeddedSequenceStore(tmp_path, preload=True, fold_at=fold_at)
    reader = EmbeddedSequenceStore(tmp_path, fold_at=fold_at)
    truth: dict[tuple[str, str, str], KeyState] = {}
    token = None
    for step in range(120):
        chosen = rng.choice(len(keys), size=int(rng.integers(1, 25)), replace=False)
        states = {keys[i]: KeyState(19_800, step * 100 + int(i)) for i in chosen}
        if step % 7 == 0:  # now and then a state with ranges (not the 33-byte fast path)
            states[keys[0]] = KeyState(19_800, step + 50, ((step + 1, step + 2, 0, 0, step),))
        writer.commit(states, [PartitionToken("t", 0, token, step + 1)])
        token = step + 1
        truth.update(states)
        if step % 5 == 0:
            assert writer.fold() >= 0
        probe = [keys[i] for i in rng.choice(len(keys), size=10, replace=False)]
        expected = {k: truth[k] for k in probe if k in truth}
        assert writer.load(probe) == expected
        if step % 3 == 0:
            assert reader.load(probe) == expected
    writer.close()
    with EmbeddedSequenceStore(tmp_path, preload=True) as again:
        assert again.load(keys) == truth
    with EmbeddedSequenceStore(tmp_path) as lazy:
        assert lazy.load(keys) == truth
    reader.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_log_and_fold_read_as_the_commits_they_hold(tmp_path: Path, seed: int) -> None:
    _reference_run(tmp_path, seed, fold_at=4)


def test_fold_moves_the_oldest_rows_and_leaves_keys_named_again_to_newer_rows(tmp_path: Path) -> None:
    a, b = ("trades", "ASX", "A"), ("trades", "ASX", "B")
    with EmbeddedSequenceStore(tmp_path, fold_at=4) as store:
        store._start_folder = lambda: None  # type: ignore[method-assign]  # fold by hand only
        for i in range(4):
            store.commit({a: KeyState(1, i + 1), b: KeyState(1, 10)} if i == 0 else {a: KeyState(1, i + 1)},
                         [PartitionToken("t", 0, i or None, i + 1)])  # fmt: skip
        assert store.fold() == 2
        rows = dict(store._db.query("SELECT k, v FROM seq_state"))
        assert set(rows) == {"trades\x1fASX\x1fB"}  # a is named again by a kept row: left to it
        assert store._db.query("SELECT count(*) FROM seq_log") == [(2,)]
        assert store.fold() == 0  # below fold_at again
        assert store.load([a, b]) == {a: KeyState(1, 4), b: KeyState(1, 10)}


def test_a_reader_behind_a_fold_starts_again(tmp_path: Path) -> None:
    key = ("trades", "ASX", "BHP")
    writer = EmbeddedSequenceStore(tmp_path, fold_at=2)
    writer._start_folder = lambda: None  # type: ignore[method-assign]
    reader = EmbeddedSequenceStore(tmp_path)
    writer.commit({key: KeyState(1, 1)}, [PartitionToken("t", 0, None, 1)])
    assert reader.load([key]) == {key: KeyState(1, 1)}
    for i in range(1, 4):  # rows the reader never saw, folded away before it looks again
        writer.commit({key: KeyState(1, i + 1)}, [PartitionToken("t", 0, i, i + 1)])
        writer.fold()
    assert reader.load([key]) == {key: KeyState(1, 4)}
    writer.close()
    reader.close()


def test_preloaded_store_answers_unknown_keys_without_a_query(tmp_path: Path) -> None:
    known = ("trades", "ASX", "BHP")
    with EmbeddedSequenceStore(tmp_path) as first:
        first.commit({known: KeyState(1, 5)}, [PartitionToken("t", 0, None, 1)])
        first.fold()
    with EmbeddedSequenceStore(tmp_path, preload=True) as store:
        assert store.load([known]) == {known: KeyState(1, 5)}
        assert store.wait_preloaded(30)
        statements: list[str] = []
        store._db.db.set_trace_callback(statements.append)
        unknown = [("trades", "ASX", f"N{i}") for i in range(100)]
        assert store.load(unknown) == {}
        assert not [s for s in statements if "seq_state" in s], statements


def test_codes_holding_the_separators_round_trip(tmp_path: Path) -> None:
    odd = {("trades", "A\x1eX", "B\x1fH\x1eP"): KeyState(1, 3), ("trades", "ASX", "[x"): KeyState(1, 4)}
    with EmbeddedSequenceStore(tmp_path, fold_at=2) as store:
        store._start_folder = lambda: None  # type: ignore[method-assign]
        store.commit(odd, [PartitionToken("t", 0, None, 1)])
        store.commit({("trades", "ASX", "C"): KeyState(1, 1)}, [PartitionToken("t", 0, 1, 2)])
        assert store.fold() == 1
    with EmbeddedSequenceStore(tmp_path, preload=True) as store:
        assert store.load(list(odd)) == odd
    with EmbeddedSequenceStore(tmp_path) as store:
        assert store.load(list(odd)) == odd


def test_a_damaged_log_row_is_corrupt(tmp_path: Path) -> None:
    key = ("trades", "ASX", "BHP")
    with EmbeddedSequenceStore(tmp_path) as store:
        store.commit({key: KeyState(1, 1)}, [PartitionToken("t", 0, None, 1)])
        with store._db.transaction() as db:
            db.execute("UPDATE seq_log SET vals = x'00'")
    with EmbeddedSequenceStore(tmp_path) as store, pytest.raises(StateCorruptError, match="sequence log row"):
        store.load([key])


def test_the_background_fold_keeps_the_log_short(tmp_path: Path) -> None:
    with EmbeddedSequenceStore(tmp_path, fold_at=4) as store:
        for i in range(40):
            store.commit(
                {("trades", "ASX", f"S{i}"): KeyState(1, 1)}, [PartitionToken("t", 0, i or None, i + 1)]
            )
        deadline = time.monotonic() + 30
        while store._db.query("SELECT count(*) FROM seq_log")[0][0] >= 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store._db.query("SELECT count(*) FROM seq_log")[0][0] < 4
        assert store._db.query("SELECT count(*) FROM seq_state")[0][0] >= 36


def test_two_folders_racing_lose_no_state(tmp_path: Path) -> None:
    """Two processes' folders (two store objects, own connections) fold in small chunks while a
    third commits: every key reads as its last commit, whoever folded what."""
    keys = [("trades", "ASX", f"S{i}") for i in range(300)]
    rng = np.random.default_rng(5)
    writer = EmbeddedSequenceStore(tmp_path, fold_at=4)
    writer._start_folder = lambda: None  # type: ignore[method-assign]
    folders = [EmbeddedSequenceStore(tmp_path, fold_at=4) for _ in range(2)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def fold_forever(store: EmbeddedSequenceStore) -> None:
        try:
            while not stop.is_set():
                store.fold(chunk=7)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=fold_forever, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    truth: dict[tuple[str, str, str], KeyState] = {}
    for step in range(150):
        chosen = rng.choice(len(keys), size=40, replace=False)
        states = {keys[i]: KeyState(19_800, step * 1_000 + int(i)) for i in chosen}
        writer.commit(states, [PartitionToken("t", 0, step or None, step + 1)])
        truth.update(states)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    writer.close()
    with EmbeddedSequenceStore(tmp_path) as fresh:
        assert fresh.load(keys) == truth
        assert fresh._db.query("SELECT count(*) FROM seq_log")[0][0] < 150  # they did fold
    for f in folders:
        f.close()


class _Gated(_Sqlite):
    """A folder's connection that calls ``hook(i)`` before its i-th transaction."""

    def __init__(self, path: Path, hook: Callable[[int], None]) -> None:
        super().__init__(path, _SEQ_SCHEMA)
        self.hook, self.n = hook, 0

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.hook(self.n)
        self.n += 1
        with super().transaction() as db:
            yield db


def test_an_older_fold_stops_once_a_newer_one_claims_the_log(tmp_path: Path) -> None:
    """Found by review: folder A (older view) wrote K's old value after folder B wrote its newer
    one, then B deleted the row holding the newer value: K read as the old value."""
    k, x, y, z = (("trades", "ASX", s) for s in "KXYZ")
    writer = EmbeddedSequenceStore(tmp_path, fold_at=4)
    writer._start_folder = lambda: None  # type: ignore[method-assign]
    token: list[int | None] = [None]

    def commit(states: dict[tuple[str, str, str], KeyState]) -> None:
        nxt = (token[0] or 0) + 1
        writer.commit(states, [PartitionToken("t", 0, token[0], nxt)])
        token[0] = nxt

    commit({k: KeyState(1, 1), x: KeyState(1, 1)})  # r1
    for i in range(3):
        commit({y: KeyState(1, 10 + i)})  # r2..r4
    a_read, b_chunk0, a_chunk0, b_done = (threading.Event() for _ in range(4))

    def hook_a(i: int) -> None:
        if i == 1:  # before A's first chunk: the others commit and B writes its first chunk
            a_read.set()
            assert b_chunk0.wait(10)
        if i == 2:
            a_chunk0.set()
            assert b_done.wait(10)

    def hook_b(i: int) -> None:
        if i == 2:  # B's first chunk written: wait for A's
            b_chunk0.set()
            assert a_chunk0.wait(10)

    fa, fb = EmbeddedSequenceStore(tmp_path, fold_at=4), EmbeddedSequenceStore(tmp_path, fold_at=4)
    ca, cb = _Gated(fa._db.path, hook_a), _Gated(fb._db.path, hook_b)

    def fold_a() -> None:
        fa.fold(ca, chunk=1)
        a_chunk0.set()  # if it stopped before its second transaction

    ta = threading.Thread(target=fold_a)
    ta.start()
    assert a_read.wait(10)  # A read rows 1..4 (last = 2): it would write K=1, then X=1
    commit({k: KeyState(1, 5)})  # r5: K's newest state
    commit({z: KeyState(1, 1)})  # r6
    commit({z: KeyState(1, 2)})  # r7
    fb.fold(cb, chunk=1)  # B: rows 1..5
    b_done.set()
    ta.join(10)
    writer.close()
    assert fa._db.query("SELECT value FROM seq_meta WHERE name = 'folded_through'") == [(5,)]
    with EmbeddedSequenceStore(tmp_path) as fresh:
        assert fresh.load([k]) == {k: KeyState(1, 5)}
    for store, conn in ((fa, ca), (fb, cb)):
        conn.close()
        store.close()


@pytest.mark.parametrize("cache", [True, False])
def test_an_exchange_holding_a_separator_keeps_its_state(tmp_path: Path, cache: bool) -> None:
    odd = ("trades", "A\x1fX", "BHP")
    with EmbeddedSequenceStore(tmp_path, cache=cache, fold_at=2) as store:
        store._start_folder = lambda: None  # type: ignore[method-assign]
        store.commit({odd: KeyState(1, 3)}, [PartitionToken("t", 0, None, 1)])
        assert store.load([odd]) == {odd: KeyState(1, 3)}
        store.commit({("trades", "ASX", "B"): KeyState(1, 1)}, [PartitionToken("t", 0, 1, 2)])
        assert store.fold() == 1
    for preload in (True, False):
        with EmbeddedSequenceStore(tmp_path, preload=preload) as again:
            assert again.load([odd]) == {odd: KeyState(1, 3)}


def test_a_fold_that_fills_whole_chunks_reports_its_rows(tmp_path: Path) -> None:
    with EmbeddedSequenceStore(tmp_path, fold_at=2) as store:
        store._start_folder = lambda: None  # type: ignore[method-assign]
        store.commit({("trades", "ASX", "A"): KeyState(1, 1)}, [PartitionToken("t", 0, None, 1)])
        store.commit({("trades", "ASX", "B"): KeyState(1, 1)}, [PartitionToken("t", 0, 1, 2)])
        assert store.fold(chunk=1) == 1


def test_the_folder_retries_a_failing_file_and_is_restarted_if_it_stopped(tmp_path: Path) -> None:
    """Found by review: one StateStoreError (a lock held past the busy timeout) ended the folder
    for good, and the log then grew without bound."""
    with EmbeddedSequenceStore(tmp_path, fold_at=2) as store:
        real = store.fold
        faults: list[BaseException] = [StateStoreError("database is locked", backend="embedded")] * 2

        def flaky(conn: _Sqlite | None = None, *, chunk: int = 2_000) -> int:
            if faults:
                raise faults.pop()
            return real(conn, chunk=chunk)

        store.fold = flaky  # type: ignore[method-assign]

        def log_rows() -> int:
            return int(store._db.query("SELECT count(*) FROM seq_log")[0][0])

        def settle() -> None:
            deadline = time.monotonic() + 30
            while log_rows() >= 2 and time.monotonic() < deadline:
                time.sleep(0.05)

        for i in range(2):
            store.commit(
                {("trades", "ASX", f"S{i}"): KeyState(1, 1)}, [PartitionToken("t", 0, i or None, i + 1)]
            )
        settle()
        assert log_rows() == 1 and not faults  # folded after two failures and their backoff
        first = store._folder
        assert first is not None
        faults.append(RuntimeError("a bug"))  # anything unexpected stops the thread
        for i in range(2, 4):
            store.commit({("trades", "ASX", f"S{i}"): KeyState(1, 1)}, [PartitionToken("t", 0, i, i + 1)])
        deadline = time.monotonic() + 30
        while (faults or first.is_alive()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not faults and not first.is_alive()
        store.commit({("trades", "ASX", "S9"): KeyState(1, 1)}, [PartitionToken("t", 0, 4, 5)])
        settle()  # a later commit started a new folder
        assert store._folder is not first and log_rows() == 1


def test_a_preload_that_lands_late_loses_no_newer_state(tmp_path: Path) -> None:
    """The preload reads on its own thread while commits go on; when it lands, every key must
    read as its newest commit, whether the cache or the preload's snapshot held it."""
    keys = [("trades", "ASX", f"S{i}") for i in range(400)]
    with EmbeddedSequenceStore(tmp_path, fold_at=4) as first:
        first.commit({k: KeyState(1, 1) for k in keys}, [PartitionToken("t", 0, None, 1)])
    other = EmbeddedSequenceStore(tmp_path, fold_at=4)  # another process, committing meanwhile
    store = EmbeddedSequenceStore(tmp_path, preload=True, fold_at=4)
    truth = {k: KeyState(1, 1) for k in keys}
    gate = threading.Event()
    real = store._decode

    def slow(values: list[bytes]) -> list[KeyState]:
        if threading.current_thread().name == "k2-state-preload":
            assert gate.wait(10)  # hold the preload until the commits below are in
        return real(values)

    store._decode = slow  # type: ignore[method-assign]
    assert store.load(keys[:10]) == {k: truth[k] for k in keys[:10]}  # starts the preload
    token = 1
    for step in range(6):
        states = {k: KeyState(1, step + 2) for k in keys[step * 50 : step * 50 + 80]}
        writer = store if step % 2 else other
        writer.commit(states, [PartitionToken("t", 0, token, token + 1)])
        token += 1
        truth.update(states)
        assert store.load(keys[step * 50 : step * 50 + 5]) == {
            k: truth[k] for k in keys[step * 50 : step * 50 + 5]
        }
    gate.set()
    assert store.wait_preloaded(30)
    assert store.load(keys) == truth
    other.close()
    store.close()


def test_damage_the_preload_finds_is_raised_and_not_read_again_at_every_load(tmp_path: Path) -> None:
    """Found by review: a value the decoder rejects with a TypeError (a TEXT value, which
    quick_check passes) killed the preload thread without its retry delay, so every load started
    another full read; and damage found on that thread was only logged."""
    good = ("trades", "ASX", "BHP")
    with EmbeddedSequenceStore(tmp_path) as first:
        first.commit({good: KeyState(1, 5)}, [PartitionToken("t", 0, None, 1)])
        with first._db.transaction() as db:
            db.execute("INSERT OR REPLACE INTO seq_state (k, v) VALUES (?, 'x')", ("trades\x1fASX\x1fCBA",))
    with EmbeddedSequenceStore(tmp_path, preload=True) as store:
        assert store.load([good]) == {good: KeyState(1, 5)}  # lazily, while the preload reads
        preloader = store._preloader
        assert preloader is not None
        preloader.join(30)
        with pytest.raises(StateCorruptError, match="sequence state"):
            store.load([good])
        with pytest.raises(StateCorruptError):
            store.commit({good: KeyState(1, 6)}, [PartitionToken("t", 0, 1, 2)])
        assert store._preloader is preloader  # no second full read


def test_no_preload_starts_once_the_store_is_closing(tmp_path: Path) -> None:
    store = EmbeddedSequenceStore(tmp_path, preload=True)
    store._closing = True  # close() has begun on another thread
    assert store.load([("trades", "ASX", "BHP")]) == {}
    assert store._preloader is None
    store.close()


def test_damage_the_folder_finds_is_raised_by_the_next_commit(tmp_path: Path) -> None:
    with EmbeddedSequenceStore(tmp_path, fold_at=2) as store:

        def damaged(conn: _Sqlite | None = None, *, chunk: int = 2_000) -> int:
            raise StateCorruptError(tmp_path, "sequence log row: damaged")

        store.fold = damaged  # type: ignore[method-assign]
        for i in range(2):
            store.commit(
                {("trades", "ASX", f"S{i}"): KeyState(1, 1)}, [PartitionToken("t", 0, i or None, i + 1)]
            )
        folder = store._folder
        assert folder is not None
        folder.join(30)
        with pytest.raises(StateCorruptError, match="damaged"):
            store.load([("trades", "ASX", "S0")])
        with pytest.raises(StateCorruptError):
            store.commit({}, [PartitionToken("t", 0, 2, 3)])
        assert store._folder is folder  # not started again on a damaged file
