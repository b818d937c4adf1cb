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
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

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

_SEP = "\x1f"  # unit separator: cannot occur in exchange or symbol codes


#: SQLite's primary result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_CORRUPT_CODES = (11, 26)


def _raise_if_corrupt(path: Path, exc: BaseException) -> None:
    """Raise StateCorruptError for a damaged file (retrying cannot help); return for anything else."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.DatabaseError) and isinstance(code, int) and code & 0xFF in _CORRUPT_CODES:
        raise StateCorruptError(path, str(exc)) from exc


class _Sqlite:
    """One connection, used under a lock; explicit transactions (isolation_level=None)."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(schema)
            # Damaged pages often read as plausible rows (or as text that is not UTF-8) rather than
            # as SQLITE_CORRUPT: check the structure once, on open, instead of retrying on garbage.
            problems = [row[0] for row in self.db.execute("PRAGMA quick_check(3)").fetchall()]
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


_ALL_TOKENS = "SELECT topic, part, next_offset FROM seq_tokens ORDER BY topic, part"
# A 64 MiB page cache (SQLite's default is 2 MiB): a batch at width updates keys spread over the
# whole table, so with the default most of its page reads missed the cache (about 2.5x slower per
# row at 180,000 keys; docs/state.md). Memory, not disk: the file is the same.
_SEQ_SCHEMA = """
PRAGMA cache_size = -65536;
CREATE TABLE IF NOT EXISTS seq_state (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_clocks (kind TEXT NOT NULL, part INTEGER NOT NULL, v BLOB NOT NULL,
  PRIMARY KEY (kind, part)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_tokens (
  ns TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset INTEGER NOT NULL,
  PRIMARY KEY (ns, topic, part)) WITHOUT ROWID;
"""


class EmbeddedSequenceStore(SequenceStore):
    """Sequence state in ``<directory>/sequence.sqlite``, with a write-through cache.

    The cache holds every state this object committed or loaded. It is trusted only while the
    stored tokens are exactly the ones this object last saw: any commit by another process (which
    must advance some token) empties it. One consumer per file, the embedded default, so reads the
    file only for keys it has never seen.

    Args:
        directory: where the SQLite file lives (created if missing).
        cache: keep the write-through cache (disable to measure the file alone).
    """

    backend = "embedded"

    def __init__(self, directory: Path, *, cache: bool = True) -> None:
        self._db = _Sqlite(directory / "sequence.sqlite", _SEQ_SCHEMA)
        self._use_cache = cache
        self._cache: dict[StateKey, KeyState] = {}
        self._seen_tokens: list[tuple[Any, ...]] | None = None
        self._guard = threading.Lock()  # load/commit may run on different threads (pipeline hook)

    def load(self, keys: Iterable[StateKey]) -> dict[StateKey, KeyState]:
        keys = list(keys)
        if not keys:
            return {}
        with self._guard:  # a commit on another thread must not interleave with the cache refill
            return self._load(keys)

    def _load(self, keys: list[StateKey]) -> dict[StateKey, KeyState]:
        cache = self._cache
        if self._use_cache:
            tokens = self._db.query(_ALL_TOKENS)
            if tokens != self._seen_tokens:
                cache.clear()
                self._seen_tokens = tokens
        found = list(map(cache.get, keys))
        out = {k: v for k, v in zip(keys, found, strict=True) if v is not None}
        if len(out) < len(keys):
            sep = _SEP
            wanted = {sep.join(k): k for k, v in zip(keys, found, strict=True) if v is None}
            rows = self._db.query(
                "SELECT k, v FROM seq_state WHERE k IN (SELECT value FROM json_each(?))",
                (json.dumps(list(wanted)),),
            )
            fresh = dict(zip([wanted[k] for k, _ in rows], decode_states([v for _, v in rows]), strict=True))
            out.update(fresh)
            if self._use_cache:
                cache.update(fresh)
        return out

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
        sep = _SEP
        rows = list(zip([sep.join(k) for k in states], encode_states(states.values()), strict=True))
        clock_rows = [(k, p, encode_clock(c)) for (k, p), c in (clocks or {}).items()]
        with self._guard:
            with self._db.transaction() as db:
                if self._use_cache and db.execute(_ALL_TOKENS).fetchall() != self._seen_tokens:
                    self._cache.clear()  # someone else committed since we last looked: trust nothing cached
                _check_tokens(db, "seq_tokens", "", tokens)
                db.executemany("INSERT OR REPLACE INTO seq_state (k, v) VALUES (?, ?)", rows)
                db.executemany(
                    "INSERT OR REPLACE INTO seq_clocks (kind, part, v) VALUES (?, ?, ?)", clock_rows
                )
                _write_tokens(db, "seq_tokens", "", tokens)
                seen = db.execute(_ALL_TOKENS).fetchall() if self._use_cache else None
            if self._use_cache:  # only once COMMIT succeeded
                self._cache.update(states)
                self._seen_tokens = seen

    def token(self, topic: str, partition: int) -> int | None:
        rows = self._db.query(
            "SELECT next_offset FROM seq_tokens WHERE ns = '' AND topic = ? AND part = ?", (topic, partition)
        )
        return int(rows[0][0]) if rows else None

    def close(self) -> None:
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
