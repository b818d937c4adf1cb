"""Backpressure on the real broker: dependency outages stall and resume, overload degrades and recovers.

Each test runs the pipeline in this process's main thread while a helper thread breaks and then
restores something real (a private Redis server, the table's data directory), or overloads it; the
tables must then equal the simulator's ground truth: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from k2.cli.loadtest.run import run_load_test
from k2.config import Settings, load_settings
from k2.lake import open_catalog
from k2.pipeline import Pipeline
from k2.pipeline.sequencing import sequence_checks
from k2.resilience.status import read_status
from k2.services import Launcher
from tests.conftest import _free_port
from tests.integration.truth_check import K2_WINDOW, assert_matches_truth, deliveries, publish, simulator

FAST_BREAKERS = {"breakers": {"failure_threshold": 2, "reset_timeout_s": 0.5}}


def _with(settings: Settings, **sections: Any) -> Settings:
    data = settings.model_dump()
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return load_settings(**data)


def _truth(sim: Any, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "truth.json"
    sim.write_truth(path)
    return json.loads(path.read_text())


class Outage:
    """Runs ``break_it`` once the pipeline committed, ``restore`` ``seconds`` later, and watches."""

    def __init__(
        self, pipeline: Pipeline, break_it: Callable[[], None], restore: Callable[[], None], seconds: float
    ) -> None:
        self.pipeline = pipeline
        self.stalled_seen = False
        self.error: BaseException | None = None
        self._steps = (break_it, restore, seconds)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Outage:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.thread.join(60)

    def _run(self) -> None:
        break_it, restore, seconds = self._steps
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and getattr(self.pipeline, "checkpoint", None) is None:
                time.sleep(0.05)
            while time.monotonic() < deadline and self.pipeline.checkpoint.commits < 2:
                time.sleep(0.05)
            break_it()
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                self.stalled_seen |= bool(self.pipeline.status()["stalled"])
                time.sleep(0.1)
            restore()
        except BaseException as exc:  # surfaced by the test
            self.error = exc


@pytest.fixture
def private_redis(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Launcher]]:
    """A Redis of this test's own (free port, own data dir) that the test may stop and start again."""
    own = _with(
        settings,
        redis={"port": _free_port()},
        state={"backend": "redis", "reorder_window": K2_WINDOW},
        resilience=FAST_BREAKERS,
    )
    own = load_settings(**{**own.model_dump(), "data_dir": tmp_path / "own"})
    launcher = Launcher(own)
    launcher.up(["redis"], timeout_s=30)
    try:
        yield own, launcher
    finally:
        launcher.down(["redis"])


def test_redis_outage_pauses_and_resumes_with_nothing_lost(
    private_redis: tuple[Settings, Launcher], tmp_path: Path
) -> None:
    settings, launcher = private_redis
    settings = _with(settings, lake={"commit_rows": 2_000}, pipeline={"batch_max_messages": 1_000})
    sim = simulator(30_000, chunk=2_000)
    publish(settings, deliveries(sim))
    truth = _truth(sim, tmp_path)

    pipeline = Pipeline(settings, checks=sequence_checks(settings))
    down = lambda: launcher.down(["redis"])  # noqa: E731
    up = lambda: launcher.up(["redis"], timeout_s=30)  # noqa: E731
    with Outage(pipeline, down, up, seconds=3.0) as outage:
        stats = pipeline.run(idle_timeout_s=3, max_seconds=80)
    assert outage.error is None, outage.error

    assert outage.stalled_seen, "the pipeline never paused while Redis was down"
    assert stats.stalls >= 1
    state = {b["name"]: b for b in pipeline.status()["breakers"]}["state"]
    assert state["opened_total"] >= 1 and state["state"] == "closed"
    assert_matches_truth(settings, truth)


def test_unwritable_warehouse_keeps_the_frozen_commit_and_retries_it(
    settings: Settings, tmp_path: Path
) -> None:
    settings = _with(
        settings,
        state={"backend": "embedded", "reorder_window": K2_WINDOW},
        lake={"commit_rows": 2_000},
        pipeline={"batch_max_messages": 1_000},
        resilience=FAST_BREAKERS,
    )
    sim = simulator(30_000, chunk=2_000)
    publish(settings, deliveries(sim))
    truth = _truth(sim, tmp_path)
    table = open_catalog(settings)
    pipeline = Pipeline(settings, checks=sequence_checks(settings))
    moved: list[Path] = []

    def break_it() -> None:
        # the trades table's data directory becomes a plain file: every Parquet write fails for real
        location = table.load_table(f"{settings.lake.namespace}.trades").location().removeprefix("file://")
        data = Path(location) / "data"
        deadline = time.monotonic() + 60  # two commits may have held only quotes on a loaded machine
        while not data.is_dir() and time.monotonic() < deadline:
            time.sleep(0.05)
        # a write in flight may create the directory again between the rename and the file: again
        for attempt in range(20):
            hidden = data.with_name(f"data.hidden{attempt}")
            data.rename(hidden)
            moved.append(hidden)
            try:
                data.write_text("not a directory")
                return
            except IsADirectoryError:
                continue
        raise AssertionError("the data directory kept coming back")

    def restore() -> None:
        data = moved[0].with_name("data")
        data.unlink()
        moved[0].rename(data)
        for hidden in moved[1:]:  # what writes in flight put in the directories made again
            for path in hidden.iterdir():
                path.rename(data / path.name)
            hidden.rmdir()

    with Outage(pipeline, break_it, restore, seconds=3.0) as outage:
        stats = pipeline.run(idle_timeout_s=3, max_seconds=80)
    assert outage.error is None, outage.error

    assert outage.stalled_seen and stats.stalls >= 1
    iceberg = {b["name"]: b for b in pipeline.status()["breakers"]}["iceberg"]
    assert iceberg["opened_total"] >= 1 and iceberg["state"] == "closed"
    status = read_status(settings.data_dir)
    assert status is not None and status["running"] is False and status["stats"]["stalls"] >= 1
    assert_matches_truth(settings, truth)


def test_load_test_degrades_defers_backfills_and_recovers(settings: Settings, tmp_path: Path) -> None:
    settings = _with(
        settings,
        state={"backend": "embedded", "reorder_window": K2_WINDOW},
        pipeline={"batch_max_messages": 2_000},
        resilience={
            "cooldown_s": 1.0,
            "lag": {
                "soft": {"up": 1_000, "down": 500},
                "graceful": {"up": 3_000, "down": 1_500},
                "aggressive": {"up": 60_000, "down": 30_000},
            },
        },
    )
    samples: list[str] = []
    result = run_load_test(
        settings,
        multiple=10,
        overload_s=6,
        normal_s=5,
        calibrate_ticks=10_000,
        max_ticks=80_000,
        drain_timeout_s=40,
        truth_file=tmp_path / "truth.json",
        on_sample=lambda s: samples.append(f"{s.t} {s.level} lag={s.lag} deferred={s.deferred}"),
    )
    trail = "\n".join(samples)
    assert result.capacity > 0
    assert result.peak_level in ("GRACEFUL", "AGGRESSIVE"), trail
    assert result.samples[-1].level == "NORMAL", trail
    assert result.deferred > 0 and result.backfilled >= result.deferred, (
        trail
    )  # every deferred tick came back
    assert result.drain_s is not None and result.drain_s < 40, trail
    assert result.report is not None
    assert result.report.ok, "\n".join(result.report.problems)
    # Whether deferral opened gaps (which the back-fill then recovered) depends on timing; either way
    # the report is exact: every gap it found recovered, none left open beyond the truth's.
    shutil.rmtree(settings.data_dir / "state", ignore_errors=True)
