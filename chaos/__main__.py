"""``python -m chaos`` (``make chaos``): the scenario matrix on both backends, one line per run.

Exits 1 if any run wrote a duplicate, lost a tick, recorded gaps other than the truth's, or could
not finish. Replay a failure with ``--scenarios NAME --backends B --seeds 1 --heavy-seeds 1
--seed-base SEED``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from chaos.cluster import Services
from chaos.runner import BACKENDS, Outcome, plan, run_matrix, summary
from chaos.scenarios import SCENARIOS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--scenarios", default="all", help=f"comma-separated, or all: {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--backends",
        default="embedded,redis",
        help="embedded, redis, both (the default), or a comma-separated list",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per scenario and backend")
    parser.add_argument("--heavy-seeds", type=int, default=None, help="seeds for the heavy scenarios "
                        "(kill-ingest, kill-broker); default 4 x --seeds")  # fmt: skip
    parser.add_argument("--seed-base", type=int, default=1, help="first seed")
    parser.add_argument("--brokers", type=int, default=1, choices=range(1, 6), metavar="N",
                        help="Kafka as a KRaft cluster of N nodes (3 adds the cluster scenarios to 'all')")  # fmt: skip
    parser.add_argument("--dir", type=Path, default=None, help="where runs live (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep every run's directory, not only failures")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name:<19} {'heavy' if s.heavy else '     '}  {s.about}")
        return 0
    if args.scenarios == "all":
        names = [n for n, s in SCENARIOS.items() if not s.cluster or args.brokers >= 3]
    else:
        names = [n.strip() for n in args.scenarios.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    needs_cluster = [n for n in names if n in SCENARIOS and SCENARIOS[n].cluster and args.brokers < 3]
    if needs_cluster:
        print(f"{', '.join(needs_cluster)} need a Kafka cluster: add --brokers 3", file=sys.stderr)
        return 2
    backends = list(BACKENDS) if args.backends == "both" else [b.strip() for b in args.backends.split(",")]
    if unknown or any(b not in BACKENDS for b in backends):
        print(f"unknown scenario or backend: {unknown or backends}; see --list", file=sys.stderr)
        return 2
    runs = plan(names, backends, args.seeds, args.seed_base, heavy_seeds=args.heavy_seeds)  # type: ignore[arg-type]
    print(f"chaos: {len(runs)} runs, seeds from {args.seed_base}", flush=True)
    started = time.monotonic()
    # not a TemporaryDirectory: a failing run's directory (logs, tables) must outlive the matrix
    root = args.dir or Path(tempfile.mkdtemp(prefix="k2-chaos-"))
    services = Services(root / "services", brokers=args.brokers)
    print(
        f"starting Kafka :{services.kafka_port} ({args.brokers} node(s)) and Redis :{services.redis_port} (k2 services up) …",
        flush=True,
    )
    # a SIGTERM (kill, a CI time-out) unwinds like Ctrl-C: the services below are stopped, not orphaned
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    services.up()
    try:

        def show(o: Outcome) -> None:
            print(o.line(), flush=True)

        outcomes = run_matrix(runs, root=root / "runs", services=services, on_outcome=show, keep=args.keep)
    finally:
        services.down()
    print(f"\n{summary(outcomes)}")
    failed = sum(not o.ok for o in outcomes)
    print(f"\n{len(outcomes)} runs, {failed} failed, {time.monotonic() - started:.0f}s")
    if failed:
        print(f"failing runs kept under {root}/runs")
    elif args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
