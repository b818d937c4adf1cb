"""``k2 query recent`` and ``k2 query watch`` (k2.cli.recent_cmd) over the fake Kafka."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import polars as pl
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from k2.cli import recent_cmd
from k2.cli.context import Context
from k2.config import Settings
from k2.config.hybrid import HybridSettings
from k2.hybrid import HybridEngine
from k2.query.engine import QueryEngine
from tests.unit.hybrid.conftest import FakeSource, Stream, ticks


@pytest.fixture
def cli(
    settings: Settings, stream: Stream, source: FakeSource, monkeypatch: pytest.MonkeyPatch
) -> typer.Typer:
    def build(context: Context, *, refresh_interval_s: float) -> HybridEngine:
        engine = QueryEngine(stream.catalog, settings.lake.namespace, refresh_interval_s=refresh_interval_s)
        return HybridEngine(settings, engine, hybrid=HybridSettings(prefetch_interval_s=0), source=source)

    monkeypatch.setattr(recent_cmd, "_hybrid", build)
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = Context(settings=settings, console=Console(width=200), err=Console(stderr=True, width=200))

    app.command("recent")(recent_cmd.recent)
    app.command("watch")(recent_cmd.watch)
    return app


def feed(stream: Stream, first: int, count: int) -> None:
    seqs = list(range(first, first + count))
    stream.produce("trades", ticks("trades", ["BHP"] * count, seqs, seconds=[float(s) for s in seqs]))


def test_recent_prints_rows_and_the_boundary(cli: typer.Typer, stream: Stream, tmp_path: Path) -> None:
    feed(stream, 1, 8)
    stream.commit("trades")
    feed(stream, 9, 2)
    out = CliRunner().invoke(cli, ["recent", "BHP", "--minutes", "60"])
    assert out.exit_code == 0, out.output
    assert "8 from Iceberg, 2 from the Kafka tail" in out.output
    path = tmp_path / "recent.parquet"
    out = CliRunner().invoke(cli, ["recent", "BHP", "--minutes", "60", "--output", str(path)])
    assert out.exit_code == 0 and pl.read_parquet(path).height == 10
    bad = CliRunner().invoke(cli, ["recent", "BHP", "--kind", "bonds"])
    assert bad.exit_code == 1 and "kind" in bad.output


def test_watch_prints_ticks_as_they_arrive(cli: typer.Typer, stream: Stream) -> None:
    feed(stream, 1, 2)

    def later() -> None:
        time.sleep(0.3)
        feed(stream, 3, 1)

    producer = threading.Thread(target=later)
    producer.start()
    # 3 s, not 1: on a loaded 2-core machine the watch once joined too late to see the tick at 0.3 s
    out = CliRunner().invoke(cli, ["watch", "BHP", "--kinds", "trades", "--duration", "3"])
    producer.join()
    assert out.exit_code == 0, out.output
    assert "watching BHP" in out.output and "BHP trade 10.530000 x 103.000000 #3" in out.output
    assert "bar BHP" in out.output
