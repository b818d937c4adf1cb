"""K2's measured figures, read from the benchmarks' JSON output so the cost model follows K2's speed.

Source order: a results directory (``benchmarks/results`` in a clone where ``make bench`` ran, or
``--measured DIR``), then the copy shipped in the package (``data/measured.json``, refreshed by
``python -m benchmarks.results``), so ``k2 cost`` works on a fresh install too. Each figure records
which file it came from and when that run was measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from k2.cost.errors import MeasuredFigureError
from k2.types import TICK_KINDS

__all__ = ["DEFAULT_RESULTS", "Measured", "load_measured"]

DEFAULT_RESULTS = Path("benchmarks") / "results"
_PACKAGED = "k2/cost/data/measured.json"


@dataclass(frozen=True)
class Measured:
    """The figures the model sizes from (units in the names), and where each came from."""

    ingest_rows_per_cpu_s: float  # checks on: sequence + dedup, one process, per CPU-second
    ingest_rows_per_s: float  # the same, wall clock, one process
    broker_msgs_per_s: float  # raw producer into one local broker (2 shared cores)
    kafka_trade_bytes: float  # framed Avro value + key
    kafka_quote_bytes: float
    parquet_trade_bytes: float  # compacted, K2's tables; the larger of real ASX and simulated
    parquet_quote_bytes: float
    redis_sequence_key_bytes: float  # used_memory rise per key (hash table included)
    redis_dedup_id_bytes: float
    bloom_bytes_per_id: float
    query_p50_ms: dict[str, float]  # warm, compacted: window / bars / asof
    query_p99_ms: dict[str, float]
    sources: dict[str, str] = field(default_factory=dict)  # benchmark -> "where (measured_at)"


def _read_dir(path: Path) -> dict[str, dict[str, Any]]:
    if path.is_file():
        combined: dict[str, dict[str, Any]] = json.loads(path.read_text())
        return combined
    return {p.stem: json.loads(p.read_text()) for p in sorted(path.glob("bench_*.json"))}


def _packaged() -> dict[str, dict[str, Any]]:
    shipped = resources.files("k2.cost").joinpath("data", "measured.json")
    return json.loads(shipped.read_text()) if shipped.is_file() else {}


class _Figures:
    def __init__(self, primary: dict[str, dict[str, Any]], where: str) -> None:
        self.layers = [(primary, where), (_packaged(), _PACKAGED)]
        self.sources: dict[str, str] = {}

    def get(self, bench: str, name: str) -> float:
        for results, where in self.layers:
            record = results.get(bench)
            if record and name in record.get("figures", {}):
                self.sources[bench] = f"{where} ({record.get('measured_at', '?')})"
                return float(record["figures"][name])
        raise MeasuredFigureError(bench, name, " or ".join(w for _, w in self.layers))


def load_measured(path: Path | None = None) -> Measured:
    """Figures from ``path`` (a results directory or a merged JSON file), else from the package.

    With no ``path``, ``./benchmarks/results`` is used when it exists (a clone of K2).

    Raises:
        MeasuredFigureError: a needed figure is in neither source.
    """
    if path is None and DEFAULT_RESULTS.is_dir():
        path = DEFAULT_RESULTS
    primary = _read_dir(path) if path is not None and path.exists() else {}
    f = _Figures(primary, str(path) if path is not None else _PACKAGED)
    worst = {k: max(f.get("bench_storage", f"parquet_asx_{k}_bytes_per_row"),
                    f.get("bench_storage", f"parquet_sim_{k}_bytes_per_row")) for k in TICK_KINDS}  # fmt: skip
    kafka = {k: f.get("bench_storage", f"kafka_{k}_value_bytes") + f.get("bench_storage", f"kafka_{k}_key_bytes")
             for k in TICK_KINDS}  # fmt: skip
    names = {"window": "a", "bars": "b", "asof": "c"}
    return Measured(
        ingest_rows_per_cpu_s=f.get("bench_ingest", "ingest_checks_rows_per_cpu_s"),
        ingest_rows_per_s=f.get("bench_ingest", "ingest_checks_rows_per_s"),
        broker_msgs_per_s=f.get("bench_producer", "raw_producer_msgs_per_s"),
        kafka_trade_bytes=kafka["trades"],
        kafka_quote_bytes=kafka["quotes"],
        parquet_trade_bytes=worst["trades"],
        parquet_quote_bytes=worst["quotes"],
        redis_sequence_key_bytes=f.get("bench_storage", "redis_sequence_key_used_memory_bytes"),
        redis_dedup_id_bytes=f.get("bench_storage", "redis_dedup_id_used_memory_bytes"),
        bloom_bytes_per_id=f.get("bench_storage", "bloom_bytes_per_id"),
        query_p50_ms={k: f.get("bench_query", f"compacted_sim_{v}_warm_p50_ms") for k, v in names.items()},
        query_p99_ms={k: f.get("bench_query", f"compacted_sim_{v}_warm_p99_ms") for k, v in names.items()},
        sources=f.sources,
    )
