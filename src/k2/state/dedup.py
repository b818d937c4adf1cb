"""Two-tier dedup by message id: a windowed Bloom filter, confirmed by an exact store.

For every id of a batch the Bloom filter answers "certainly new" or "maybe seen"; only the "maybe"
ids (about G * p of new ids, see k2.state.bloom) go to the exact :class:`~k2.state.base.DedupStore`,
each asked only of the generations whose filter claimed it (one round trip per such generation): an
id stored in generation g was added to g's filter in the same commit, and the embedded store's
lookup cost grows with the generations asked. A Bloom positive alone never drops a tick. Ids repeated inside one batch are
duplicates from their second occurrence on.

Time is exchange time: generation = floor(exchange_ts / span), span = window / generations, so a
replay of the same messages puts every id in the same generation, whatever the batch boundaries.

Protocol (the pipeline, per batch)::

    dup = dedup.check(batch["message_id"], batch["exchange_ts"])      # reads only
    kept = batch.filter(~dup)
    ... Iceberg commit of kept ...
    dedup.commit(kept["message_id"], kept["exchange_ts"], tokens)    # exact store + Bloom
    dedup.save(path)                                                  # now and then, and at shutdown

After a crash, ``load(path)`` restores the filter if its tokens equal the store's, else rebuilds it
from the exact store (which is the truth the filter caches); the pipeline's rebuild replay then
re-commits the ids of any Iceberg commit the store missed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from k2.config import StateSettings
from k2.observability.logging import get_logger
from k2.state.base import DedupStore, PartitionToken
from k2.state.bloom import WindowedBloom
from k2.state.errors import StateStoreError
from k2.state.ids import Ids, id_bytes
from k2.state.metrics import state_metrics

__all__ = ["Deduplicator"]

log = get_logger(__name__)
_FORMAT = "k2-dedup-bloom/2"  # /1: rbloom filters, refused and rebuilt from the exact store


class Deduplicator:
    """Dedup of one stream kind.

    Args:
        kind: "trades" or "quotes" (metrics label, saved-file check).
        store: the exact tier.
        window_hours, generations, capacity, error_rate: see StateSettings and k2.state.bloom.
        bloom_file: the file :meth:`persist` writes and :meth:`open` reads.
    """

    def __init__(
        self,
        kind: str,
        store: DedupStore,
        *,
        window_hours: float = 24.0,
        generations: int = 4,
        capacity: int = 10_000_000,
        error_rate: float = 0.001,
        bloom_file: Path | None = None,
    ) -> None:
        self.kind = kind
        self.store = store
        self.bloom_file = bloom_file  # where persist() saves the filter (None: nowhere)
        self.span_us = max(1, int(window_hours * 3_600_000_000 / generations))
        self.bloom = WindowedBloom(capacity=capacity, error_rate=error_rate, generations=generations)
        self._tokens: dict[tuple[str, int], int] = {}
        self._pending = (0, 0, 0)
        # the pipeline may commit on another thread while the next batch is checked: the filter's
        # generations are touched only under this lock (the exact stores are thread-safe themselves)
        self._lock = threading.Lock()  # duplicates, positives, false positives of the last check

    @classmethod
    def from_settings(
        cls,
        kind: str,
        settings: StateSettings,
        store: DedupStore,
        *,
        share: int = 1,
        bloom_file: Path | None = None,
    ) -> Deduplicator:
        """One kind's Deduplicator from the state settings.

        Args:
            share: how many Deduplicators split the configured capacity (one per partition), so
                the process's Bloom memory stays what ``bloom_capacity`` says.
        """
        return cls(
            kind,
            store,
            window_hours=settings.dedup_window_hours,
            generations=settings.dedup_generations,
            capacity=max(1000, settings.bloom_capacity // max(1, share)),
            error_rate=settings.bloom_error_rate,
            bloom_file=bloom_file,
        )

    def persist(self) -> None:
        """Save the filter to its file, if it has one; a failure only costs a rebuild next time."""
        if self.bloom_file is None:
            return
        try:
            self.save(self.bloom_file)
        except StateStoreError as exc:
            log.warning("bloom filter not saved; the next start rebuilds it", error=str(exc))

    def _generations(self, ts: pl.Series | datetime, n: int) -> np.ndarray:
        if isinstance(ts, datetime):
            return np.full(n, int(ts.timestamp() * 1_000_000) // self.span_us, dtype=np.int64)
        return ts.dt.epoch("us").to_numpy() // self.span_us

    def check(self, ids: pl.Series, ts: pl.Series | datetime, *, keys: np.ndarray | None = None) -> pl.Series:
        """``is_duplicate`` per id: seen within the window (exactly confirmed) or repeated in the batch.

        Args:
            ids: message ids (32 hex digits).
            ts: exchange time per id (or one time for all), which picks the generation.
            keys: the ids' 16-byte keys, when the caller has them (``id_bytes(ids)``).

        Raises:
            StateStoreError: the exact store failed.
        """
        n = ids.len()
        if n == 0:
            self._pending = (0, 0, 0)
            return pl.Series("is_duplicate", [], dtype=pl.Boolean)
        if keys is None:
            keys = id_bytes(ids)  # once per batch; the stores still take the series
        with self._lock:
            self.bloom.rotate(int(self._generations(ts, n).max()))
            live = set(self.bloom.live())
            claims = {g: c for g, c in self.bloom.claims(keys).items() if g in live}
        first = ids.is_first_distinct().to_numpy()
        maybe = np.zeros(n, dtype=bool)
        for claimed in claims.values():
            maybe |= claimed
        candidates = np.flatnonzero(maybe & first)
        dup = ~first
        confirmed = 0
        if candidates.size:
            # an id stored in generation g was added to g's filter too, so only g's claims go to g
            found = np.zeros(candidates.size, dtype=bool)
            for g, claimed in sorted(claims.items()):
                ask = np.flatnonzero(claimed[candidates] & ~found)
                if ask.size:
                    hit = self.store.contains(ids.gather(candidates[ask]), [g])
                    found[ask[np.asarray(hit, dtype=bool)]] = True
            dup[candidates[found]] = True
            confirmed = int(found.sum())
        self._pending = (int(dup.sum()), int(candidates.size), int(candidates.size) - confirmed)
        return pl.Series("is_duplicate", dup)

    def commit(self, new_ids: pl.Series, ts: pl.Series | datetime, tokens: Sequence[PartitionToken]) -> None:
        """Remember the ids just written (after the Iceberg commit), fenced by ``tokens``.

        Raises:
            StaleStateError: a token moved on (another consumer owns the partition); nothing changed.
            StateStoreError: the exact store failed; the Bloom filter is unchanged.
        """
        n = new_ids.len()
        gens = self._generations(ts, n) if n else np.zeros(0, dtype=np.int64)
        keys = id_bytes(new_ids)  # before the store: a malformed id changes neither tier
        with self._lock:
            if n:
                self.bloom.rotate(int(gens.max()))
            floor = self.bloom.oldest_live
        by_gen: dict[int, np.ndarray] = {}  # the 16-byte keys of each generation
        if n:
            assert floor is not None  # rotate() above set the current generation
            gens = np.maximum(gens, floor)  # older than the window: keep it as long as we can
            if int(gens.min()) == int(gens.max()):
                by_gen[int(gens[0])] = keys
            else:
                for g in np.unique(gens).tolist():
                    by_gen[g] = keys[gens == g]
        if self.store.takes_keys:  # no second conversion from hex
            stored: Mapping[int, Ids] = by_gen
        elif len(by_gen) == 1:
            stored = dict.fromkeys(by_gen, new_ids)
        else:
            stored = {g: new_ids.filter(pl.Series(gens == g)) for g in by_gen}
        self.store.add(stored, tokens, drop_before=floor if floor is not None else 0)
        with self._lock:
            for g, kept in by_gen.items():
                self.bloom.add(g, kept)
        for t in tokens:
            self._tokens[(t.topic, t.partition)] = t.offset
        dups, positives, false_positives = self._pending
        self._pending = (0, 0, 0)
        m = state_metrics()
        m.dedup_duplicates.labels(self.kind).inc(dups)
        m.bloom_positives.inc(positives)
        m.bloom_false_positives.inc(false_positives)

    def save(self, path: Path) -> None:
        """Write the Bloom generations and the tokens they reflect.

        Raises:
            StateStoreError: the file could not be written.
        """
        meta = {
            "format": _FORMAT,
            "kind": self.kind,
            "span_us": self.span_us,
            "tokens": [[t, p, o] for (t, p), o in sorted(self._tokens.items())],
        }
        try:
            with self._lock:
                self.bloom.save(path, meta)
        except OSError as exc:
            raise StateStoreError(f"cannot save the Bloom filter to {path}: {exc}", backend="bloom") from exc

    def load(self, path: Path, partitions: Iterable[tuple[str, int]] | None = None) -> bool:
        """Restore the filter saved at path if it matches the store; otherwise rebuild it from the store.

        Args:
            partitions: the (topic, partition)s this consumer owns; their stored tokens must equal
                the saved ones. None: every token of the store's namespace must.

        Returns:
            True when the saved filter was used, False when it was rebuilt from the exact store.

        Raises:
            StateStoreError: the exact store failed during a rebuild.
        """
        stored = self.store.tokens()
        try:
            bloom, header = WindowedBloom.read(path)
            saved = {(t, int(p)): int(o) for t, p, o in header["tokens"]}
            wanted = list(partitions) if partitions is not None else list(stored)
            usable = (
                header.get("format") == _FORMAT
                and header.get("kind") == self.kind
                and header.get("span_us") == self.span_us
                and (bloom.capacity, bloom.error_rate, bloom.generations)
                == (self.bloom.capacity, self.bloom.error_rate, self.bloom.generations)
                and all(saved.get(tp) == stored.get(tp) for tp in wanted)
                and (partitions is not None or saved == stored)
            )
        except (OSError, ValueError, KeyError) as exc:
            log.info("bloom file unusable, rebuilding from the exact store", path=str(path), error=str(exc))
            usable = False
        if usable:
            self.bloom, self._tokens = bloom, {tp: o for tp, o in saved.items()}
            return True
        self.rebuild()
        self._tokens = dict(stored)
        return False

    def rebuild(self) -> None:
        """Refill the Bloom filter from the exact store's generations.

        Raises:
            StateStoreError: the exact store failed.
        """
        self.bloom = WindowedBloom(
            capacity=self.bloom.capacity, error_rate=self.bloom.error_rate, generations=self.bloom.generations
        )
        gens = self.store.generations()
        if not gens:
            return
        self.bloom.rotate(gens[-1])
        for g in self.bloom.live():
            if g in gens:
                self.bloom.add(g, id_bytes(self.store.ids(g)))
        log.info(
            "bloom filter rebuilt from the exact store", kind=self.kind, generations=len(self.bloom.filters)
        )
