"""Run every benchmark, one after another: ``python -m benchmarks [--quick] [bench_x ...]`` (``make bench``).

Each prints its own medians and its ratio against a baseline measured in the same run. One that
fails does not stop the others: its traceback is printed where it failed, the run goes on, and
the end lists what ran (with wall times) and what failed; the exit code is 1 if any failed.
Names after the options run only those benchmarks.
"""

from __future__ import annotations

import gc
import importlib
import pkgutil
import sys
import time
import traceback
from dataclasses import dataclass

import benchmarks


@dataclass(frozen=True)
class Outcome:
    """One benchmark's run: its wall time, and why it failed (``None``: it ran to the end)."""

    name: str
    seconds: float
    error: str | None = None


def discover(package: str = "benchmarks") -> list[str]:
    """The ``bench_*`` modules of ``package``, sorted."""
    path = importlib.import_module(package).__path__
    return sorted(m.name for m in pkgutil.iter_modules(path) if m.name.startswith("bench_"))


def run_all(names: list[str], argv: list[str], package: str = "benchmarks") -> list[Outcome]:
    """Run ``package.<name>.main(argv)`` for each name, whether or not the ones before it failed.

    A benchmark fails when importing it or its ``main`` raises (``SystemExit`` with a non-zero
    code included, e.g. argparse rejecting an option); Ctrl-C still stops the whole run.
    """
    outcomes = []
    for name in names:
        print(f"\n=== {name} {' '.join(argv)} ===", flush=True)
        started = time.perf_counter()
        error: str | None = None
        try:
            importlib.import_module(f"{package}.{name}").main(argv)
        except KeyboardInterrupt:
            raise
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                error = f"SystemExit({exit_.code!r})"
        except BaseException as exc:  # any failure is reported; the next benchmark runs
            traceback.print_exc()
            sys.stderr.flush()
            error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        seconds = time.perf_counter() - started
        gc.collect()  # what one left in reference cycles (Kafka clients and their threads) goes now
        outcomes.append(Outcome(name, seconds, error))
        status = "done" if error is None else "FAILED"
        print(f"=== {name} {status} in {seconds:.0f}s ===", flush=True)
    return outcomes


def summary(outcomes: list[Outcome]) -> str:
    """A table of every benchmark's outcome, the failed ones named again at the end."""
    lines = ["", "=== summary ==="]
    for o in outcomes:
        lines.append(f"  {o.name:<16} {'ok' if o.error is None else 'FAILED':<6} {o.seconds:7.0f}s")
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        lines.append(f"{len(failed)} of {len(outcomes)} benchmark(s) failed:")
        lines += [f"  {o.name}: {o.error}" for o in failed]
    else:
        lines.append(f"all {len(outcomes)} benchmark(s) ran")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    quick = ["--quick"] if "--quick" in args else []
    known = discover(benchmarks.__name__)
    chosen = [a for a in args if not a.startswith("-")]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; there are: {', '.join(known)}", file=sys.stderr)
        return 2
    outcomes = run_all(chosen or known, quick, benchmarks.__name__)
    print(summary(outcomes), flush=True)
    return 1 if any(o.error is not None for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
