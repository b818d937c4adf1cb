"""Sequence state on RocksDB beside K2's stores, for ADR 002 (Redis and embedded, not RocksDB).

    python -m benchmarks.bench_rocksdb [--quick] [--batches N] [--batch-size N] [--symbols N]

The same load + classify + commit loop as ``bench_state`` (10,000-tick batches over 1,000 symbols),
through K2's ``SequenceTracker``, with four stores measured batch by batch in one run: a dict (no
store), K2's embedded SQLite store (WAL, ``synchronous=NORMAL``; with its key cache and without,
the like-for-like engine comparison), a RocksDB store written for this
benchmark only (rocksdict: multi-get for the load; one WriteBatch of states + tokens for the commit,
after the same token fence; the WAL without fsync, the same durability as the SQLite setting) and
K2's Redis store with its Lua commit. RocksDB is measured only if ``rocksdict`` imports.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from benchmarks.bench_state import _redis, bench_sequence
from benchmarks.results import write_result
from k2.state.base import PartitionToken, SequenceStore
from k2.state.embedded import EmbeddedSequenceStore
from k2.state.errors import StaleStateError
from k2.state.model import (
    ClockKey,
    KeyState,
    PartitionClock,
    StateKey,
    decode_clock,
    decode_state,
    encode_clock,
    encode_state,
)
from k2.state.redis import RedisSequenceStore
from k2.state.synthetic import SyntheticFeed

__all__ = ["RocksSequenceStore", "main"]


class RocksSequenceStore(SequenceStore):
    """A bench-only RocksDB sequence store with K2's contract: tokens fence an atomic write batch.

    RocksDB locks its directory to one handle per process: store objects on the same path share
    one (counted), so a second consumer or a restart in the same process works as with K2's stores.
    """

    backend = "rocksdb"
    _open: ClassVar[dict[str, list[Any]]] = {}  # path -> [Rdict, store objects using it]

    def __init__(self, path: Path) -> None:
        from rocksdict import Rdict, WriteBatch

        self._path = str(path)
        shared = self._open.setdefault(self._path, [None, 0])
        if shared[0] is None:
            shared[0] = Rdict(self._path)
        shared[1] += 1
        self._db: Any = shared[0]
        self._batch = WriteBatch
        self._closed = False

    @staticmethod
    def _key(key: StateKey) -> str:
        return f"s:{key[0]}:{key[1]}:{key[2]}"

    @staticmethod
    def _clock_key(key: ClockKey) -> str:
        return f"c:{key[0]}:{key[1]}"

    def load(self, keys: Iterable[StateKey]) -> dict[StateKey, KeyState]:
        keys = list(keys)
        values = self._db[[self._key(k) for k in keys]]
        return {k: decode_state(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def load_clocks(self, keys: Iterable[ClockKey]) -> dict[ClockKey, PartitionClock]:
        keys = list(keys)
        values = self._db[[self._clock_key(k) for k in keys]]
        return {k: decode_clock(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def commit(
        self,
        states: Mapping[StateKey, KeyState],
        tokens: Sequence[PartitionToken],
        clocks: Mapping[ClockKey, PartitionClock] | None = None,
    ) -> None:
        for t in tokens:
            stored = self._db.get(f"t:{t.topic}:{t.partition}")
            if stored != t.expected:
                raise StaleStateError(
                    topic=t.topic, partition=t.partition, expected=t.expected, actual=stored
                )
        batch = self._batch()
        for k, state in states.items():
            batch.put(self._key(k), encode_state(state))
        for ck, clock in (clocks or {}).items():
            batch.put(self._clock_key(ck), encode_clock(clock))
        for t in tokens:
            batch.put(f"t:{t.topic}:{t.partition}", t.offset)
        self._db.write(batch)

    def token(self, topic: str, partition: int) -> int | None:
        return self._db.get(f"t:{topic}:{partition}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        shared = self._open[self._path]
        shared[1] -= 1
        if shared[1] == 0:
            del self._open[self._path]
            self._db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="25 batches")
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--symbols", type=int, default=1_000)
    args = parser.parse_args(argv)
    count = args.batches or (25 if args.quick else 120)
    feed = SyntheticFeed(symbols=args.symbols, fault_rate=0.0005, seed=11)
    batches = [feed.next_batch(args.batch_size) for _ in range(count)]
    with tempfile.TemporaryDirectory(prefix="k2-bench-rocks-") as tmp, _redis(Path(tmp) / "k2") as settings:
        stores: dict[str, SequenceStore | None] = {
            "k2 tracker, in memory": None,
            "embedded (SQLite)": EmbeddedSequenceStore(Path(tmp) / "embedded"),
            "embedded, no cache": EmbeddedSequenceStore(Path(tmp) / "embedded-nocache", cache=False),
        }
        note = ""
        try:
            stores["rocksdb (rocksdict)"] = RocksSequenceStore(Path(tmp) / "rocks")
        except ImportError as exc:
            note = f"rocksdict not installed: {exc}"
            print(note)
        stores["redis, Lua commit"] = RedisSequenceStore(
            settings.redis.model_copy(update={"key_prefix": "rk:"})
        )
        rates = bench_sequence(batches, stores)
        for store in stores.values():
            if store:
                store.close()
    figures = {"batch_size": args.batch_size, "symbols": args.symbols}
    for label, key in (("python dict/set", "python_dict"), ("k2 tracker, in memory", "in_memory"),
                       ("embedded (SQLite)", "embedded"), ("embedded, no cache", "embedded_nocache"),
                       ("rocksdb (rocksdict)", "rocksdb"),
                       ("redis, Lua commit", "redis_lua")):  # fmt: skip
        if label in rates:
            figures[f"sequence_{key}_per_s"] = rates[label]
    write_result("bench_rocksdb", figures, quick=args.quick, notes=note)


if __name__ == "__main__":
    main()
