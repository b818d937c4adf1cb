"""Start-up time of the ``k2`` command: ``k2 --help`` and ``k2 <cmd> --help`` against a bare Python.

    python -m benchmarks.bench_cli [--quick] [--repeats R]

Each figure is the median wall time of R fresh processes (``python -m k2.cli …``, the code of this
tree), and its ratio to ``python -c pass`` measured in the same run: the ratio is what survives a
busy or a faster machine. The help paths import no Iceberg, DuckDB, Polars, Arrow, Kafka or
FastAPI (tests/unit/cli/test_app.py), so they stay near Typer's own start-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.results import write_result

__all__ = ["main", "median_wall"]

_SRC = Path(__file__).resolve().parents[1] / "src"
CASES: dict[str, list[str]] = {
    "help": ["-m", "k2.cli", "--help"],
    "query_help": ["-m", "k2.cli", "query", "--help"],
    "ingest_help": ["-m", "k2.cli", "ingest", "--help"],
}


def median_wall(args: list[str], repeats: int, env: dict[str, str]) -> float:
    """Median seconds from spawn to exit of ``python ARGS`` (output discarded), after one warm-up."""
    times = []
    for i in range(repeats + 1):
        began = time.perf_counter()
        subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL)
        if i:  # the first run fills the OS page cache; it is not counted
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 5")
    parser.add_argument("--repeats", type=int, default=None, help="processes per case (median reported)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_SRC), os.environ.get("PYTHONPATH")])),
    }
    baseline = median_wall(["-c", "pass"], repeats, env)
    figures: dict[str, float] = {"python_pass_s": baseline}
    print(f"python -c pass          median {baseline * 1000:7.1f} ms")
    for name, case in CASES.items():
        wall = median_wall(case, repeats, env)
        figures[f"{name}_s"], figures[f"{name}_ratio"] = wall, wall / baseline
        shown = "k2 " + " ".join(case[2:])
        print(f"{shown:<23} median {wall * 1000:7.1f} ms  ({wall / baseline:5.1f}x python -c pass)")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    figures["load_average_1m"] = load
    write_result(
        "bench_cli", figures, quick=args.quick, notes=f"median of {repeats}; 1-minute load {load:.1f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
