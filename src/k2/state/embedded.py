"""Embedded stores: one SQLite file each, WAL mode, one transaction per commit.

Why SQLite rather than RocksDB (rocksdict): it ships with Python, a commit is a real multi-key
transaction (state rows and tokens together, which RocksDB only offers through a WriteBatch without
a read-check), several processes on one machine can share the file safely, and the measured batch
load/commit of 1,000 keys fits the 1 M ticks/s budget (see docs/state.md). ``synchronous=NORMAL``
in WAL mode may lose the last commits on a power cut, never on a process crash; a lost commit also
loses its token, so the rebuild just replays a little more.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import compress, repeat
from operator import is_, is_not, methodcaller, not_
from pathlib import Path
from typing import Any, cast

import numpy as np
import structlog

from k2.state import runs
from k2.state.base import DedupStore, PartitionToken, SequenceStore
from k2.state.errors import StaleStateError, StateCorruptError, StateStoreError
from k2.state.ids import ID_DTYPE, Ids, id_bytes, id_hex
from k2.state.model import (
    ClockKey,
    KeyState,
    PartitionClock,
    StateKey,
    decode_clock,
    decode_states,
    encode_clock,
    encode_states,
)

__all__ = ["EmbeddedDedupStore", "EmbeddedSequenceStore"]

log = structlog.get_logger(__name__)

_SEP = "\x1f"  # unit separator: cannot occur in exchange or symbol codes
_RS = "\x1e"  # record separator, between the keys of a log row


#: SQLite's primary result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_CORRUPT_CODES = (11, 26)


def _raise_if_corrupt(path: Path, exc: BaseException) -> None:
    """Raise StateCorruptError for a damaged file (retrying cannot help); return for anything else."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.DatabaseError) and isinstance(code, int) and code & 0xFF in _CORRUPT_CODES:
        raise StateCorruptError(path, str(exc)) from exc


class _Sqlite:
    """One connection, used under a lock; explicit transactions (isolation_level=None)."""

    def __init__(self, path: Path, schema: str, *, check: bool = True) -> None:
        self.path = path
        self.lock = threading.Lock()
        try:
            if not check and not path.exists():  # a helper connection must not create a removed file
                raise StateStoreError(f"state file {path} is gone", backend="embedded")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(schema)
            # Damaged pages often read as plausible rows (or as text that is not UTF-8) rather than
            # as SQLITE_CORRUPT: check the structure once, on open, instead of retrying on garbage.
            problems = (
                [row[0] for row in self.db.execute("PRAGMA quick_check(3)").fetchall()] if check else ["ok"]
            )
        except (sqlite3.Error, OSError) as exc:
            _raise_if_corrupt(path, exc)
            raise StateStoreError(f"cannot open state file {path}: {exc}", backend="embedded") from exc
        if problems != ["ok"]:
            self.db.close()
            raise StateCorruptError(path, "; ".join(str(p) for p in problems)[:300])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (including StaleStateError)."""
        with self.lock:
            db = self.db
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    _raise_if_corrupt(self.path, exc)
                    raise StateStoreError(f"state file {self.path}: {exc}", backend="embedded") from exc
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock, for several reads; sqlite errors become StateStoreError."""
        with self.lock:
            try:
                yield self.db
            except sqlite3.Error as exc:
                _raise_if_corrupt(self.path, exc)
                raise StateStoreError(f"state file {self.path}: {exc}", backend="embedded") from exc

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            try:
                return self.db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                _raise_if_corrupt(self.path, exc)
                raise StateStoreError(f"state file {self.path}: {exc}", backend="embedded") from exc

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _check_tokens(db: sqlite3.Connection, table: str, ns: str, tokens: Sequence[PartitionToken]) -> None:
    for t in tokens:
        row = db.execute(
            f"SELECT next_offset FROM {table} WHERE ns = ? AND topic = ? AND part = ?",
            (ns, t.topic, t.partition),
        ).fetchone()
        actual = None if row is None else int(row[0])
        if actual != t.expected:
            raise StaleStateError(topic=t.topic, partition=t.partition, expected=t.expected, actual=actual)


def _write_tokens(db: sqlite3.Connection, table: str, ns: str, tokens: Sequence[PartitionToken]) -> None:
    db.executemany(
        f"INSERT OR REPLACE INTO {table} (ns, topic, part, next_offset) VALUES (?, ?, ?, ?)",
        [(ns, t.topic, t.partition, t.offset) for t in tokens],
    )


# A 64 MiB page cache (SQLite's default is 2 MiB): a fold writes keys spread over the whole table,
# and with the default most of its page reads missed the cache (about 2.5x slower per row at
# 180,000 keys; docs/state.md). Memory, not disk: the file is the same.
_SEQ_SCHEMA = """
PRAGMA cache_size = -65536;
PRAGMA journal_size_limit = 67108864;
CREATE TABLE IF NOT EXISTS seq_state (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_log (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL,
  keys TEXT NOT NULL, sizes BLOB NOT NULL, vals BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seq_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_clocks (kind TEXT NOT NULL, part INTEGER NOT NULL, v BLOB NOT NULL,
  PRIMARY KEY (kind, part)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_tokens (
  ns TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset INTEGER NOT NULL,
  PRIMARY KEY (ns, topic, part)) WITHOUT ROWID;
"""


def _meta(db: sqlite3.Connection, name: str) -> int:
    row = db.execute("SELECT value FROM seq_meta WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def _folded(db: sqlite3.Connection) -> int:
    """The newest log row folded into ``seq_state`` (0: none yet)."""
    return _meta(db, "folded_through")


_SIZE = np.dtype("<u4")


def _name(key: StateKey) -> str:
    """A key as ``seq_state`` and the log spell it: the fields joined by ``_SEP``, or JSON when a
    field holds a separator (JSON escapes control characters; kinds are words, so a joined name
    never starts with "[")."""
    joined = _SEP.join(key)
    if joined.count(_SEP) == 2 and _RS not in joined and not joined.startswith("["):
        return joined
    return json.dumps(list(key))


def _names(keys: Sequence[StateKey]) -> str:
    """:func:`_name` of every key, joined by ``_RS``; C-level joins when no code holds a separator."""
    text = _RS.join(map(_SEP.join, keys))
    n = len(keys)
    if (
        text.count(_RS) == n - 1
        and text.count(_SEP) == 2 * n
        and not text.startswith("[")
        and _RS + "[" not in text
    ):
        return text
    return _RS.join(map(_name, keys))


def _keys(path: Path, names: list[str]) -> list[StateKey]:
    """Inverse of :func:`_name` for many names; kinds and exchanges interned (a few distinct
    strings shared by every key instead of a copy per key: ~100 B a key at 1 M keys).

    Raises:
        StateCorruptError: a name is not a key.
    """
    intern, sep = sys.intern, _SEP
    if not any(map(str.startswith, names, repeat("["))):
        try:
            return [(intern(k), intern(e), s) for k, e, s in map(methodcaller("split", sep), names)]
        except ValueError as exc:  # not three fields
            raise StateCorruptError(path, f"sequence state key: {exc}") from exc
    keys: list[StateKey] = []
    for n in names:
        try:
            fields = json.loads(n) if n.startswith("[") else n.split(_SEP)
        except ValueError as exc:
            raise StateCorruptError(path, f"sequence state key: {exc}") from exc
        if not isinstance(fields, list) or len(fields) != 3 or not all(isinstance(f, str) for f in fields):
            raise StateCorruptError(path, f"sequence state key {n[:60]!r}")
        keys.append((intern(fields[0]), intern(fields[1]), fields[2]))
    return keys


def _log_record(states: Mapping[StateKey, KeyState]) -> tuple[int, str, bytes, bytes]:
    """One commit's states as one log row: the keys' names joined, the values concatenated, their sizes."""
    values = encode_states(states.values())
    sizes = np.fromiter(map(len, values), _SIZE, len(values)).tobytes()
    return len(values), _names(list(states)), sizes, b"".join(values)


def _log_keys(path: Path, n: int, keys: object) -> list[str]:
    """The key names of a log row (as ``seq_state`` spells them).

    Raises:
        StateCorruptError: the row does not hold ``n`` keys.
    """
    if not isinstance(keys, str):
        raise StateCorruptError(path, f"sequence log row: keys stored as {type(keys).__name__}")
    names = keys.split(_RS)
    if len(names) != n:
        raise StateCorruptError(path, f"sequence log row of {n} states holds {len(names)} keys")
    return names


def _log_values(path: Path, n: int, sizes: object, vals: object) -> list[bytes]:
    """The encoded states of a log row.

    Raises:
        StateCorruptError: the row does not hold ``n`` values.
    """
    if not isinstance(sizes, bytes) or not isinstance(vals, bytes):
        raise StateCorruptError(path, "sequence log row: sizes or values not stored as bytes")
    try:
        ends = np.cumsum(np.frombuffer(sizes, _SIZE), dtype=np.int64).tolist()
    except ValueError as exc:
        raise StateCorruptError(path, f"sequence log row: {exc}") from exc
    if len(ends) != n or (ends[-1] if ends else 0) != len(vals):
        raise StateCorruptError(
            path, f"sequence log row of {n} states holds {len(ends)} sizes, {len(vals)} bytes"
        )
    return [vals[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


class EmbeddedSequenceStore(SequenceStore):
    """Sequence state in ``<directory>/sequence.sqlite``: a log of commits folded into per-key rows.

    Why a log: at width a checkpoint changes the state of tens of thousands of keys spread over the
    whole table, and writing them as rows (a B-tree insert each, about 5 µs) was the largest cost of
    the checks at 1 M symbols. A commit writes its states as **one** row of ``seq_log`` instead; a
    background thread (started by the first commit) folds the oldest log rows into ``seq_state``,
    the latest value per key, in their own short transactions. A key's state is the newest log
    entry naming it, else its ``seq_state`` row; folding the oldest rows changes no key's state, so
    it needs no coordination with readers beyond the ``folded_through`` mark: a reader that had not
    yet seen rows folded away drops its cache and reads again.

    In memory: every state this object committed, loaded or read from the log (a write-through
    cache, applied in log order, so another process's commits are seen at the next load). With
    ``preload`` the first load starts reading the whole table on a thread of its own; once it has,
    a key absent from memory is known absent without a query (the pipeline's setting; a reader of
    a few keys leaves it off).

    Args:
        directory: where the SQLite file lives (created if missing).
        cache: keep the cache between calls (disable to measure the file alone).
        preload: read every state in the background from the first use (see above).
        fold_at: log rows that start a fold (tests lower it); the oldest half is folded at a time.
    """

    backend = "embedded"

    def __init__(
        self, directory: Path, *, cache: bool = True, preload: bool = False, fold_at: int = 16
    ) -> None:
        self._db = _Sqlite(directory / "sequence.sqlite", _SEQ_SCHEMA)
        self._use_cache = cache
        self._preload = preload and cache
        self._fold_at = max(2, fold_at)
        # a state, or its encoding when it came from the log and nobody asked for it yet (a restart
        # replays up to fold_at rows of every key touched: ~224,000 at 1 M symbols)
        self._cache: dict[StateKey, KeyState | bytes] = {}
        self._complete = False  # the cache holds every key of the file (absent: not stored)
        self._log_seen = 0  # the newest log row applied to the cache
        self._guard = threading.Lock()  # load/commit may run on different threads (pipeline hook)
        self._folder: threading.Thread | None = None
        self._preloader: threading.Thread | None = None
        self._preloaded = threading.Event()
        self._generation = 0  # + 1 whenever the cache is dropped
        self._preload_after = 0.0  # monotonic time before which a failed preload is not tried again
        self._corrupt: StateCorruptError | None = None  # damage a background thread found
        self._wake = threading.Event()
        self._closing = False

    def load(self, keys: Iterable[StateKey]) -> dict[StateKey, KeyState]:
        keys = list(keys)
        if not keys:
            return {}
        with self._guard, self._db.read() as db:
            db.execute("BEGIN")  # one snapshot for the log, the mark and the rows
            try:
                return self._load(db, keys)
            finally:
                db.execute("COMMIT")

    def _load(self, db: sqlite3.Connection, keys: list[StateKey]) -> dict[StateKey, KeyState]:
        self._sync(db)
        cache = self._cache
        found = list(map(cache.get, keys))  # C-level passes below: ~14,000 keys a batch at 1 M symbols
        hit = list(map(is_not, found, repeat(None)))
        out = dict(zip(compress(keys, hit), compress(found, hit), strict=True))
        encoded = list(map(is_, map(type, found), repeat(bytes)))
        if any(encoded):  # states read from the log are decoded when first asked for
            raw = list(compress(keys, encoded))
            decoded = dict(zip(raw, self._decode(list(compress(found, encoded))), strict=True))  # type: ignore[arg-type]
            out.update(decoded)
            cache.update(decoded)
        if len(out) < len(keys) and not self._complete:
            wanted = {_name(k): k for k in compress(keys, map(not_, hit))}
            rows = db.execute(
                "SELECT k, v FROM seq_state WHERE k IN (SELECT value FROM json_each(?))",
                (json.dumps(list(wanted)),),
            ).fetchall()
            fresh = dict(zip([wanted[k] for k, _ in rows], self._decode([v for _, v in rows]), strict=True))
            out.update(fresh)
            cache.update(fresh)  # none of them is in the log: the log was applied first
        if not self._use_cache:
            self._forget()
        return cast(dict[StateKey, KeyState], out)  # every encoded state was decoded above

    def _sync(self, db: sqlite3.Connection) -> None:
        """Bring the cache up to the file: the log rows not yet applied, in order (within a transaction)."""
        if self._corrupt is not None:  # found by the preload or the folder, on their threads
            raise self._corrupt
        folded = _folded(db)
        if folded > self._log_seen:  # rows this cache never saw are in seq_state now: start again
            self._forget()
        idle = self._preloader is None or not self._preloader.is_alive()
        due = time.monotonic() >= self._preload_after
        if self._preload and not self._complete and idle and due and not self._closing:
            self._preloader = threading.Thread(
                target=self._preload_all, args=(self._generation,), name="k2-state-preload", daemon=True
            )
            self._preloader.start()
        rows = db.execute(
            "SELECT id, n, keys, sizes, vals FROM seq_log WHERE id > ? ORDER BY id", (self._log_seen,)
        ).fetchall()
        path = self._db.path
        for log_id, n, keys, sizes, vals in rows:
            values = _log_values(path, n, sizes, vals)  # kept encoded: decoded when asked for
            self._cache.update(zip(_keys(path, _log_keys(path, n, keys)), values, strict=True))
            self._log_seen = log_id
        self._log_seen = max(self._log_seen, folded)

    def _forget(self) -> None:
        self._cache = {}
        self._complete = False
        self._log_seen = 0
        self._generation += 1  # a preload started before this must not land
        self._preloaded.clear()

    def _preload_all(self, generation: int) -> None:
        """Read every state (the table, then the log over it) on a thread of its own, then make the
        cache complete; until then loads read the keys they miss, as without ``preload``.

        Why in the background: a restart at 1 M keys reads for seconds, and the pipeline's first
        batches need only their own keys. Correct to merge late: a key the cache holds is at least
        as new as the snapshot read here for every log row the cache applied, and the next sync
        applies the log rows after both in order, so whichever value wins the merge, the key ends
        at its newest.
        """
        states: dict[StateKey, KeyState | bytes] = {}
        try:
            conn = _Sqlite(self._db.path, _SEQ_SCHEMA, check=False)
            try:
                with conn.read() as db:
                    db.execute("BEGIN")
                    try:
                        cursor = db.execute("SELECT k, v FROM seq_state")
                        path = self._db.path
                        while not self._closing and (chunk := cursor.fetchmany(100_000)):  # ~190 B a key less
                            names = _keys(path, [k for k, _ in chunk])
                            states.update(zip(names, self._decode([v for _, v in chunk]), strict=True))
                        for _, n, keys, sizes, vals in db.execute(
                            "SELECT id, n, keys, sizes, vals FROM seq_log ORDER BY id"
                        ):
                            decoded = self._decode(_log_values(path, n, sizes, vals))
                            states.update(zip(_keys(path, _log_keys(path, n, keys)), decoded, strict=True))
                    finally:
                        db.execute("COMMIT")
            finally:
                conn.close()
        except StateCorruptError as exc:
            self._corrupt = exc  # the next load or commit raises it: retrying cannot mend a file
            log.error("sequence state preload found a damaged file", error=str(exc))
            return
        except Exception as exc:  # whatever it was, keys are read as needed meanwhile
            self._preload_after = time.monotonic() + 30.0
            log.warning("sequence state preload failed; keys are read as needed", error=str(exc),
                        retry_in_s=30, exc_info=not isinstance(exc, StateStoreError))  # fmt: skip
            return
        with self._guard:
            if self._generation != generation or self._closing:
                return  # the cache was dropped meanwhile (a fold passed it): the next sync starts again
            states.update(self._cache)  # what the cache holds is at least as new (see above)
            self._cache = states
            self._complete = True
            self._preloaded.set()

    def wait_preloaded(self, timeout: float | None = None) -> bool:
        """Block until a started preload has made the cache complete (tests, benchmarks)."""
        return self._preloaded.wait(timeout)

    def _decode(self, values: list[bytes]) -> list[KeyState]:
        try:
            return decode_states(values)
        except (ValueError, TypeError, struct.error) as exc:
            raise StateCorruptError(self._db.path, f"sequence state: {exc}") from exc

    def load_clocks(self, keys: Iterable[ClockKey]) -> dict[ClockKey, PartitionClock]:
        out = {}
        for kind, part in keys:  # a few partitions per batch; the file is read, never cached
            rows = self._db.query("SELECT v FROM seq_clocks WHERE kind = ? AND part = ?", (kind, part))
            if rows:
                out[(kind, part)] = decode_clock(rows[0][0])
        return out

    def commit(
        self,
        states: Mapping[StateKey, KeyState],
        tokens: Sequence[PartitionToken],
        clocks: Mapping[ClockKey, PartitionClock] | None = None,
    ) -> None:
        record = _log_record(states) if states else None
        clock_rows = [(k, p, encode_clock(c)) for (k, p), c in (clocks or {}).items()]
        with self._guard:
            with self._db.transaction() as db:
                self._sync(db)  # another process's commits come before ours in the log and in memory
                _check_tokens(db, "seq_tokens", "", tokens)
                log_id = None
                if record is not None:
                    log_id = db.execute(
                        "INSERT INTO seq_log (n, keys, sizes, vals) VALUES (?, ?, ?, ?)", record
                    ).lastrowid
                db.executemany(
                    "INSERT OR REPLACE INTO seq_clocks (kind, part, v) VALUES (?, ?, ?)", clock_rows
                )
                _write_tokens(db, "seq_tokens", "", tokens)
                backlog = db.execute("SELECT count(*) FROM seq_log").fetchone()[0]
            # only once COMMIT succeeded; the file holds nothing newer than this (we held the lock)
            self._cache.update(states)
            if log_id is not None:
                self._log_seen = log_id
            if not self._use_cache:
                self._forget()
            if backlog >= self._fold_at:
                self._start_folder()

    def _start_folder(self) -> None:
        """Wake the folder, starting it (again, if it died) first; under ``_guard``."""
        if (
            self._corrupt is None
            and not self._closing
            and (self._folder is None or not self._folder.is_alive())
        ):
            self._folder = threading.Thread(target=self._fold_loop, name="k2-state-fold", daemon=True)
            self._folder.start()
        self._wake.set()

    def _fold_loop(self) -> None:
        """Fold whenever woken, until closed (own connection). A failing file is retried with a
        backoff up to 30 s (the log just grows meanwhile; readers still see every commit); a
        damaged one stops the thread, and the next load or commit raises it to the pipeline."""
        folder: _Sqlite | None = None
        backoff = 0.0
        while not self._closing:
            if not backoff:
                self._wake.wait()
                self._wake.clear()
            try:
                folder = folder or _Sqlite(self._db.path, _SEQ_SCHEMA, check=False)
                while not self._closing and self.fold(folder) > 0:
                    pass
                backoff = 0.0
            except StateStoreError as exc:
                backoff = min(30.0, backoff * 2 or 0.5)
                log.warning("sequence state fold failed; retrying", error=str(exc), retry_in_s=backoff)
                self._wake.wait(backoff)
            except StateCorruptError as exc:
                self._corrupt = exc  # the next load or commit raises it
                log.error("sequence state fold stopped: the file is damaged", error=str(exc))
                break
            except Exception:  # a bug of ours: stop, and let the next commit start a fresh folder
                log.exception("sequence state fold stopped; the next commit starts it again")
                break
        if folder is not None:
            folder.close()

    def fold(self, conn: _Sqlite | None = None, *, chunk: int = 2_000) -> int:
        """If the log holds ``fold_at`` rows or more, fold the oldest (all but the newest
        ``fold_at // 2``, at most ``2 * fold_at``) into ``seq_state``: the latest value per key,
        leaving a key that one of the next ``fold_at // 2`` rows names again to that row. Returns the
        rows folded (0 if another folder took over). Public for tests and tools; the store's
        background thread calls it.

        The keys are written ``chunk`` at a time, each in its own transaction, so that a commit
        never waits for a whole fold (~7,000 keys a batch at 1 M symbols, ~5 µs each): a chunk
        written changes no key's state while the log still holds its rows. The first transaction
        claims the fold (``fold_epoch`` + 1); every later one first checks that no other folder
        claimed one since, or moved the mark, and stops if so (the newer fold read every row this
        one did); the last deletes the rows and moves the mark.

        Raises:
            StateStoreError: the file failed.
            StateCorruptError: a log row is damaged.
        """
        sqlite, path, keep = conn or self._db, self._db.path, self._fold_at // 2
        with sqlite.transaction() as db:
            mark = _folded(db)
            ids = [r[0] for r in db.execute("SELECT id FROM seq_log ORDER BY id").fetchall()]
            if len(ids) < self._fold_at:
                return 0
            take = min(len(ids) - keep, 2 * self._fold_at)
            last, until = ids[take - 1], ids[min(take + keep, len(ids)) - 1]
            epoch = _meta(db, "fold_epoch") + 1
            db.execute("INSERT OR REPLACE INTO seq_meta (name, value) VALUES ('fold_epoch', ?)", (epoch,))
            newer: set[str] = set()
            for n, keys in db.execute("SELECT n, keys FROM seq_log WHERE id > ? AND id <= ?", (last, until)):
                newer.update(_log_keys(path, n, keys))
            latest: dict[str, bytes] = {}
            for n, keys, sizes, vals in db.execute(
                "SELECT n, keys, sizes, vals FROM seq_log WHERE id <= ? ORDER BY id", (last,)
            ):
                latest.update(zip(_log_keys(path, n, keys), _log_values(path, n, sizes, vals), strict=True))
        rows = [(k, v) for k, v in latest.items() if k not in newer]
        for start in range(0, max(len(rows), 1), chunk):  # at least one: the last may write nothing
            with sqlite.transaction() as db:
                if _folded(db) != mark or _meta(db, "fold_epoch") != epoch:
                    return 0  # another folder took over; it covers every row this one read
                db.executemany(
                    "INSERT OR REPLACE INTO seq_state (k, v) VALUES (?, ?)", rows[start : start + chunk]
                )
                if start + chunk >= len(rows):
                    db.execute("DELETE FROM seq_log WHERE id <= ?", (last,))
                    db.execute(
                        "INSERT OR REPLACE INTO seq_meta (name, value) VALUES ('folded_through', ?)", (last,)
                    )
        return take

    def token(self, topic: str, partition: int) -> int | None:
        rows = self._db.query(
            "SELECT next_offset FROM seq_tokens WHERE ns = '' AND topic = ? AND part = ?", (topic, partition)
        )
        return int(rows[0][0]) if rows else None

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        for thread in (self._folder, self._preloader):
            if thread is not None:
                thread.join(timeout=60)
        self._cache.clear()
        self._db.close()


_DEDUP_SCHEMA = (
    """
PRAGMA cache_size = -65536;
CREATE TABLE IF NOT EXISTS dedup_gens (ns TEXT NOT NULL, gen INTEGER NOT NULL, PRIMARY KEY (ns, gen)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedup_tokens (
  ns TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset INTEGER NOT NULL,
  PRIMARY KEY (ns, topic, part)) WITHOUT ROWID;
"""
    + runs.RUNS_SCHEMA
)


class EmbeddedDedupStore(DedupStore):
    """Exact message ids in ``<directory>/dedup.sqlite``, as sorted runs per (namespace, generation).

    Each commit adds one run of sorted 16-byte ids per generation, in blocks of ``runs.BLOCK`` ids,
    and merges runs as they accumulate (``k2.state.runs``); a lookup is one index seek per run.
    Nothing is cached in process memory: the file is the exact tier, the Bloom filter the memory tier.
    Files written by the earlier layout (one table per generation) are converted when opened.

    Args:
        directory: where the SQLite file lives.
        namespace: separates stream kinds; letters, digits and underscores.

    Raises:
        StateStoreError: the file cannot be opened or converted.
    """

    backend = "embedded"
    takes_keys = True

    def __init__(self, directory: Path, namespace: str) -> None:
        if not namespace.replace("_", "").isalnum():
            raise ValueError(f"dedup namespace must be alphanumeric or '_', got {namespace!r}")
        self.namespace = namespace
        self._db = _Sqlite(directory / "dedup.sqlite", _DEDUP_SCHEMA)
        self._convert_tables()

    def _convert_tables(self) -> None:
        """Move ids of the table-per-generation layout into runs, in one transaction."""
        prefix = f"dd_{self.namespace}_"
        names = self._db.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, ?) = ?",
            (len(prefix), prefix),
        )
        old = [n for (n,) in names if n[len(prefix) :].lstrip("-").isdigit()]
        if not old:
            return
        with self._db.transaction() as db:
            for name in old:
                blob = b"".join(r[0] for r in db.execute(f'SELECT id FROM "{name}" ORDER BY id'))
                keys = runs.sorted_unique(np.frombuffer(blob, dtype=ID_DTYPE))
                if keys.size:
                    runs.write(db, self.namespace, int(name[len(prefix) :]), keys)
                db.execute(f'DROP TABLE "{name}"')

    def contains(self, ids: Ids, generations: Sequence[int]) -> list[bool]:
        if not len(ids) or not generations:
            return [False] * len(ids)
        keys = id_bytes(ids)
        with self._db.read() as db:
            found: list[bool] = runs.contains(db, self.namespace, keys, sorted(set(generations))).tolist()
            return found

    def add(
        self,
        ids_by_generation: Mapping[int, Ids],
        tokens: Sequence[PartitionToken],
        drop_before: int,
    ) -> None:
        ns = self.namespace
        batches = {g: runs.sorted_unique(id_bytes(ids)) for g, ids in ids_by_generation.items() if len(ids)}
        with self._db.transaction() as db:
            _check_tokens(db, "dedup_tokens", ns, tokens)
            for gen, keys in batches.items():
                db.execute("INSERT OR IGNORE INTO dedup_gens (ns, gen) VALUES (?, ?)", (ns, gen))
                runs.write(db, ns, gen, keys)
            runs.drop_before(db, ns, drop_before)
            db.execute("DELETE FROM dedup_gens WHERE ns = ? AND gen < ?", (ns, drop_before))
            _write_tokens(db, "dedup_tokens", ns, tokens)

    def ids(self, generation: int) -> list[str]:
        with self._db.read() as db:
            return id_hex(runs.generation_keys(db, self.namespace, generation))

    def generations(self) -> list[int]:
        rows = self._db.query("SELECT gen FROM dedup_gens WHERE ns = ? ORDER BY gen", (self.namespace,))
        return [int(r[0]) for r in rows]

    def tokens(self) -> dict[tuple[str, int], int]:
        rows = self._db.query(
            "SELECT topic, part, next_offset FROM dedup_tokens WHERE ns = ?", (self.namespace,)
        )
        return {(t, int(p)): int(o) for t, p, o in rows}

    def close(self) -> None:
        self._db.close()
