"""One JSON file per benchmark, so that other tools (``k2 cost``) read K2's figures, not a copy of them.

Each ``bench_*`` module calls :func:`write_result` once at the end of its run; the file
``benchmarks/results/<name>.json`` (or ``$K2_BENCH_RESULTS/<name>.json``) is replaced. The files
in the repository are the last measured run; ``k2 cost`` reads them from a clone and falls back
to the copy shipped in the package (``python -m benchmarks.results`` refreshes that copy).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["PACKAGED", "RESULTS_DIR", "results_dir", "snapshot", "write_result"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PACKAGED = Path(__file__).resolve().parents[1] / "src" / "k2" / "cost" / "data" / "measured.json"


def results_dir() -> Path:
    """Where results go: ``$K2_BENCH_RESULTS`` if set (a scratch run), else ``benchmarks/results``."""
    return Path(os.environ.get("K2_BENCH_RESULTS") or RESULTS_DIR)


def write_result(name: str, figures: dict[str, Any], *, quick: bool, notes: str = "") -> Path:
    """Write ``figures`` (flat name -> number) with when, where and how they were measured."""
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "command": " ".join(["python -m", f"benchmarks.{name}", *sys.argv[1:]]),
        "notes": notes,
        "figures": {k: _number(v) for k, v in figures.items()},
    }
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {path}", flush=True)
    return path


def _number(value: Any) -> Any:
    """A float rounded; one that could not be measured (nan, inf) as null: strict JSON has neither."""
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def snapshot(source: Path = RESULTS_DIR, target: Path = PACKAGED) -> Path:
    """Merge every result file into the one the package ships (the fallback of ``k2 cost``)."""
    merged = {p.stem: json.loads(p.read_text()) for p in sorted(source.glob("bench_*.json"))}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(merged, indent=2) + "\n")
    return target


if __name__ == "__main__":
    print(f"wrote {snapshot()}")
