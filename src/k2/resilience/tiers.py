"""Priority tiers of symbols: who is served first and deferred last.

An exchange listed in ``resilience.tiers`` gets exactly its hand-picked lists (unlisted symbols are
tier 3). Every other exchange is ranked by observed activity: the ``tier1_fraction`` most active
symbols are tier 1, the next ``tier2_fraction`` tier 2, the rest tier 3. Activity is the number of
ticks per symbol (trades and quotes alike: the load a symbol puts on the pipeline), kept as an
exponentially decaying count so the ranking follows the market through the day.

Everything is a Polars operation on per-symbol tables, never a Python loop over ticks. ``observe``
costs one ``group_by`` per batch; the ranking is recomputed at most every ``tiers_refresh_s`` (and
not at all while the pipeline skips optional work, so the set of deferred symbols holds still
while it is degraded).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import polars as pl

from k2.config.resilience import ResilienceSettings

__all__ = ["PriorityTiers"]

_KEYS = ["exchange", "symbol"]
_TIER = pl.UInt8
#: Pending per-batch counts folded into the volume table beyond this many (bounded memory while frozen).
_MAX_PENDING = 32
_EMPTY_VOLUME = pl.DataFrame(schema={"exchange": pl.String, "symbol": pl.String, "volume": pl.Float64})


class PriorityTiers:
    """Per (exchange, symbol) tiers, from explicit lists or from decaying tick counts.

    Args:
        settings: the ``resilience`` section (fractions, explicit lists, half-life, refresh period).
        clock: monotonic seconds; tests pass a fake.
    """

    def __init__(self, settings: ResilienceSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._explicit = _explicit_table(settings)
        self._explicit_exchanges = sorted(settings.tiers)
        self._volume = _EMPTY_VOLUME
        self._pending: list[pl.DataFrame] = []
        self._decayed_at = clock()
        self._refreshed_at: float | None = None
        self._table = self._explicit

    @property
    def table(self) -> pl.DataFrame:
        """Current tiers: columns exchange, symbol, tier (UInt8)."""
        return self._table

    def observe(self, frame: pl.DataFrame, *, refresh: bool = True) -> bool:
        """Count this batch's ticks per symbol; re-rank if due. Returns whether tiers were recomputed.

        Args:
            frame: a batch of source ticks (at least ``exchange`` and ``symbol``); pass every source
                batch, deferred rows included, and no back-filled ones (a back-fill burst is not
                market activity).
            refresh: False while the pipeline skips optional work. The very first ranking is made
                regardless: without it every symbol would be "unknown".
        """
        if frame.height:
            self._pending.append(frame.group_by(_KEYS).agg(pl.len().cast(pl.Float64).alias("volume")))
        due = (
            self._refreshed_at is None or self._clock() - self._refreshed_at >= self.settings.tiers_refresh_s
        )
        if (refresh and due) or (self._refreshed_at is None and self._pending):
            self.refresh()
            return True
        if len(self._pending) > _MAX_PENDING:
            self._fold()
        return False

    def refresh(self) -> None:
        """Fold pending counts into the decayed volume and rank every exchange without explicit lists."""
        self._fold()
        self._refreshed_at = self._clock()
        ranked = self._rank(self._volume.filter(~pl.col("exchange").is_in(self._explicit_exchanges)))
        self._table = pl.concat([self._explicit, ranked], how="vertical")

    def of(self, frame: pl.DataFrame) -> pl.Series:
        """Tier (UInt8) of each row of ``frame``, aligned with its rows."""
        if frame.height == 0:
            return pl.Series("tier", [], dtype=_TIER)
        default = (
            pl.when(pl.col("exchange").is_in(self._explicit_exchanges))
            .then(pl.lit(3, _TIER))
            .otherwise(pl.lit(self.settings.unknown_tier, _TIER))
        )
        joined = frame.select(_KEYS).join(self._table, on=_KEYS, how="left", maintain_order="left")
        return joined.select(pl.col("tier").fill_null(default)).to_series()

    def counts(self) -> dict[int, int]:
        """Symbols per tier, for status displays."""
        rows = self._table.group_by("tier").len().iter_rows()
        return {int(tier): int(n) for tier, n in rows}

    def _fold(self) -> None:
        """Decay the volume table to now and add the pending batch counts to it."""
        now = self._clock()
        factor = math.exp2(-(now - self._decayed_at) / self.settings.volume_half_life_s)
        self._decayed_at = now
        parts = [self._volume.with_columns(pl.col("volume") * factor), *self._pending]
        self._pending.clear()
        self._volume = (
            pl.concat(parts, how="vertical")
            .group_by(_KEYS)
            .agg(pl.col("volume").sum())
            .filter(pl.col("volume") > 1e-3)  # long-gone symbols fade out instead of piling up
        )

    def _rank(self, volume: pl.DataFrame) -> pl.DataFrame:
        s = self.settings
        n = pl.len().over("exchange").cast(pl.Float64)
        rank = pl.int_range(1, pl.len() + 1).over("exchange").cast(pl.Float64)
        # ceil: an exchange with few symbols still has a tier 1; ties broken by symbol, so a ranking
        # does not depend on the order in which counts arrived
        return (
            volume.sort(["exchange", "volume", "symbol"], descending=[False, True, False])
            .with_columns(
                pl.when(rank <= (n * s.tier1_fraction).ceil())
                .then(pl.lit(1, _TIER))
                .when(rank <= (n * (s.tier1_fraction + s.tier2_fraction)).ceil())
                .then(pl.lit(2, _TIER))
                .otherwise(pl.lit(3, _TIER))
                .alias("tier")
            )
            .select([*_KEYS, "tier"])
        )


def _explicit_table(settings: ResilienceSettings) -> pl.DataFrame:
    rows = [
        (exchange, symbol, tier)
        for exchange, lists in settings.tiers.items()
        for tier, symbols in ((1, lists.tier1), (2, lists.tier2))
        for symbol in symbols
    ]
    return pl.DataFrame(
        rows, schema={"exchange": pl.String, "symbol": pl.String, "tier": _TIER}, orient="row"
    )
