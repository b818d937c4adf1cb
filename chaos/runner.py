"""The matrix: every (scenario, backend, seed) run, one line each, and the summary.

A run that raises (a feed that failed, a fault this machine cannot inject) is a failed run with its
reason, never a silent pass. A passing run's directory is deleted and its topics and Redis keys
dropped, so a long matrix does not fill the shared broker; a failing run's directory is kept.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from chaos.cluster import Services
from chaos.run import Backend, Run
from chaos.scenarios import SCENARIOS
from chaos.truth import Verdict, check

__all__ = ["BACKENDS", "Outcome", "plan", "run_matrix", "run_one", "summary"]

BACKENDS: tuple[Backend, ...] = ("embedded", "redis")


@dataclass
class Outcome:
    """One run's result and its printed line."""

    scenario: str
    backend: str
    seed: int
    verdict: Verdict | None
    seconds: float
    error: str = ""
    notes: list[str] = field(default_factory=list)
    kept: Path | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is not None and self.verdict.ok and not self.error

    def line(self) -> str:
        head = f"{self.scenario:<19} {self.backend:<8} seed={self.seed:<5}"
        if self.verdict is None:
            return f"{head} ERROR {self.error}  ({self.seconds:.0f}s)"
        v = self.verdict
        gaps = "yes" if v.gaps_ok else "NO"
        text = (
            f"{head} rows={v.rows:<7,} unique={v.unique:<7,} duplicates={v.duplicates:<6,} "
            f"missing={v.missing:<6,} gaps={gaps:<3} {'ok  ' if self.ok else 'FAIL'} ({self.seconds:.0f}s)"
        )
        if v.extra:
            text += f" extra={v.extra:,}"
        if v.gap_detail:
            text += f" [{v.gap_detail}]"
        if self.notes:
            text += "  | " + "; ".join(self.notes)
        if self.kept is not None:
            text += f"  kept {self.kept}"
        return text


def plan(
    scenarios: Iterable[str],
    backends: Iterable[Backend],
    seeds: int,
    seed_base: int,
    *,
    heavy_seeds: int | None = None,
) -> list[tuple[str, Backend, int]]:
    """Every run of the matrix: ``seeds`` seeds per scenario, ``heavy_seeds`` (default 4x) for heavy ones."""
    runs = []
    for name in scenarios:
        count = (4 * seeds if heavy_seeds is None else heavy_seeds) if SCENARIOS[name].heavy else seeds
        for backend in backends:
            runs += [(name, backend, seed) for seed in range(seed_base, seed_base + count)]
    return runs


def run_one(
    services: Services, root: Path, scenario: str, backend: Backend, seed: int, *, keep: bool = False
) -> Outcome:
    """Play one scenario, drain with a clean ingest, and check the lake against the truth."""
    run = Run(services, root, scenario, backend, seed)
    verdict: Verdict | None = None
    error = ""
    try:
        expected = SCENARIOS[scenario].play(run)
        run.drain()
        verdict = check(run.settings(), expected, defers=SCENARIOS[scenario].defers)
    except Exception as exc:  # a run that cannot finish is a failed run, with its reason
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        (run.dir / "error.txt").write_text(traceback.format_exc())
        services.up()  # a fault may have left a service down: the next run needs it back
    outcome = Outcome(scenario, backend, seed, verdict, time.monotonic() - run.started, error, run.notes)
    _drop_names(run)
    if outcome.ok and not keep:
        shutil.rmtree(run.dir, ignore_errors=True)
    else:
        outcome.kept = run.dir
    return outcome


def _drop_names(run: Run) -> None:
    """Delete the run's topics and Redis keys (best effort: a leftover only costs space)."""
    prefix = run.names["K2_KAFKA__TOPIC_PREFIX"]
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{run.services.kafka_port}"})
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        if topics:
            for future in admin.delete_topics(topics, operation_timeout=30).values():
                future.result(30)
    except Exception:
        pass
    try:
        import redis

        client = redis.Redis.from_url(f"redis://127.0.0.1:{run.services.redis_port}/0")
        keys = list(client.scan_iter(match=f"{run.names['K2_REDIS__KEY_PREFIX']}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()
    except Exception:
        pass


def run_matrix(
    runs: list[tuple[str, Backend, int]],
    *,
    root: Path,
    services: Services,
    on_outcome: Callable[[Outcome], None] | None = None,
    keep: bool = False,
) -> list[Outcome]:
    outcomes = []
    for scenario, backend, seed in runs:
        outcome = run_one(services, root, scenario, backend, seed, keep=keep)
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def summary(outcomes: list[Outcome]) -> str:
    """One row per (scenario, backend): runs, failures, and the totals of what went wrong."""
    rows: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        rows.setdefault((o.scenario, o.backend), []).append(o)
    lines = [f"{'scenario':<19} {'backend':<8} {'runs':>4} {'failed':>6} {'duplicates':>10} {'missing':>8} "
             f"{'gaps≠truth':>10} {'errors':>6}  failing seeds"]  # fmt: skip
    for (scenario, backend), group in rows.items():
        failed = [o for o in group if not o.ok]
        dups = sum(o.verdict.duplicates for o in group if o.verdict)
        missing = sum(o.verdict.missing for o in group if o.verdict)
        gaps = sum(1 for o in group if o.verdict and not o.verdict.gaps_ok)
        errors = sum(1 for o in group if o.verdict is None)
        seeds = ",".join(str(o.seed) for o in failed)
        lines.append(
            f"{scenario:<19} {backend:<8} {len(group):>4} {len(failed):>6} {dups:>10,} {missing:>8,} "
            f"{gaps:>10} {errors:>6}  {seeds}"
        )
    return "\n".join(lines)
