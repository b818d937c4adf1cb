"""Python's cyclic garbage collector, tuned for a loop that allocates 50,000 objects per batch.

Every ``consume()`` creates one ``Message`` per record. With the default gen-0 threshold (700) the
collector runs about seventy times per 50,000-message batch, and the survivors it promotes trigger
full collections that walk every object of the process (pyiceberg, pydantic, Polars' Python side).
Measured here on a prefetched topic: 0.46 M messages/s with the defaults, 1.1 M with a gen-0
threshold of 50,000, 1.16 M with the collector off. The messages form no reference cycles (they are
freed by reference counting), so a higher threshold only delays the collection of rare cycles.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["tuned_gc"]


@contextmanager
def tuned_gc(gen0_threshold: int) -> Iterator[None]:
    """Freeze what start-up allocated and raise the gen-0 threshold; both undone on exit.

    ``gen0_threshold`` 0 leaves the collector as it is.
    """
    if gen0_threshold <= 0:
        yield
        return
    before = gc.get_threshold()
    gc.freeze()  # start-up objects (modules, schemas, catalogs) are never garbage: stop re-walking them
    gc.set_threshold(gen0_threshold, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
