"""Run every benchmark, one after another: ``python -m benchmarks [--quick]`` (``make bench``).

Each prints its own medians and its ratio against a baseline measured in the same run.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def main() -> None:
    quick = ["--quick"] if "--quick" in sys.argv[1:] else []
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    for name in names:
        print(f"\n=== {name} {' '.join(quick)} ===", flush=True)
        started = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main(quick)
        print(f"=== {name} done in {time.perf_counter() - started:.0f}s ===", flush=True)


if __name__ == "__main__":
    main()
