"""One router per resource; ``k2.api.app`` mounts them under /v1 behind the key and rate guard."""

from __future__ import annotations

from k2.api.routes import bars, joins, latest, replay, snapshots, status, symbols, system, ticks

__all__ = [
    "V1_ROUTERS", "bars", "joins", "latest", "replay", "snapshots", "status", "symbols", "system", "ticks",
]  # fmt: skip

V1_ROUTERS = (
    ticks.router,
    bars.router,
    joins.router,
    latest.router,
    snapshots.router,
    replay.router,
    symbols.router,
    status.router,
)
