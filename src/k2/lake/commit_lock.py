"""One K2 committer at a time per table on a PostgreSQL catalog: writers queue instead of racing.

Each attempt at a commit writes its data files before the catalog's compare-and-set (the rows
carry the commit's stamp), so a writer that loses the race has written them for nothing, and
writers committing back to back lose again and again: four processes of 150 commits through
PostgreSQL retried 1,148 conflicts and gave up 17 times after 20 in a row. A transaction-scoped
advisory lock on the table's name makes K2's writers take turns for the refresh, write and
commit instead.

The lock is an optimisation, never the guard: the compare-and-set on the offsets still decides
(writers that do not take the lock, such as another engine or an older K2, conflict and retry as
before). PostgreSQL releases the lock when the holder's transaction ends, its connection drops
or its process dies, so a SIGKILLed ingester cannot wedge the others. SQLite serialises writers
on its file lock already, and other catalogs get no lock.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyiceberg.catalog import Catalog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from k2.lake.errors import LakeError
from k2.observability.logging import get_logger
from k2.observability.metrics import REGISTRY, Histogram

__all__ = ["commit_lock", "lock_key"]

log = get_logger(__name__)

#: PostgreSQL's lock_not_available: lock_timeout expired.
_LOCK_NOT_AVAILABLE = "55P03"
#: A writer idle inside its commit transaction this long loses its session, and the lock with it:
#: a hung holder (not dead) must not stall every other writer of the table for ever.
_HOLD_LIMIT_S = 300.0

LOCK_WAIT_SECONDS = Histogram(
    "k2_lake_commit_lock_wait_seconds",
    "Time a commit waited for the table's advisory lock (PostgreSQL catalog)",
    ["table"],
    registry=REGISTRY,
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def lock_key(catalog_name: str, identifier: str) -> int:
    """The table's advisory lock key: a stable signed 64-bit hash (PostgreSQL's bigint)."""
    digest = hashlib.blake2b(f"k2-commit:{catalog_name}:{identifier}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _postgres_engine(catalog: Catalog) -> Any | None:
    engine = getattr(catalog, "engine", None)  # pyiceberg's SqlCatalog keeps its SQLAlchemy engine
    dialect = getattr(getattr(engine, "dialect", None), "name", None)
    return engine if dialect == "postgresql" else None


@contextmanager
def commit_lock(catalog: Catalog, identifier: str, *, timeout_s: float = 60.0) -> Iterator[None]:
    """Hold ``identifier``'s commit lock for the block, on a PostgreSQL catalog (elsewhere: no-op).

    Raises:
        LakeError: the lock was not granted within ``timeout_s`` (a writer holding it that long is
            stuck; the pipeline retries behind its breaker), or the catalog could not be reached.
            Whatever the block raises passes through unchanged.
    """
    engine = _postgres_engine(catalog)
    if engine is None:
        yield
        return
    name = identifier.rsplit(".", 1)[-1]
    began = time.perf_counter()
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        raise LakeError(f"the catalog is unreachable for {identifier}'s commit lock: {exc.orig}") from exc
    try:
        transaction = conn.begin()
        try:
            # lock_timeout bounds the wait on any lock, advisory ones included; a holder that hangs
            # inside its commit (not dead, so its session stays) loses its session after
            # idle_in_transaction_session_timeout, and with it the lock
            conn.execute(text(f"SET LOCAL lock_timeout = '{max(1, int(timeout_s * 1000))}ms'"))
            conn.execute(
                text(f"SET LOCAL idle_in_transaction_session_timeout = '{int(_HOLD_LIMIT_S * 1000)}ms'")
            )
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(catalog.name, identifier)}
            )
        except DBAPIError as exc:
            if getattr(exc.orig, "pgcode", None) == _LOCK_NOT_AVAILABLE:
                raise LakeError(
                    f"{identifier}'s commit lock was not granted in {timeout_s:.0f}s: another writer holds it"
                ) from exc
            raise LakeError(f"{identifier}'s commit lock failed: {exc.orig}") from exc
        LOCK_WAIT_SECONDS.labels(name).observe(time.perf_counter() - began)
        try:
            yield
        finally:
            # Only the lock lives in this transaction: ending it releases the lock. Its connection may
            # have died meanwhile (a server restart, the hold limit); that must not replace what the
            # block itself did or raised (a landed commit, a fence), so it is only logged.
            try:
                transaction.rollback()
            except DBAPIError as exc:
                log.info(
                    "the commit lock's session was gone at release", table=identifier, error=str(exc.orig)
                )
    finally:
        try:
            conn.close()
        except DBAPIError as exc:
            log.info("closing the commit lock's connection failed", table=identifier, error=str(exc.orig))
