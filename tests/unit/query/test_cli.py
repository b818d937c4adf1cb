"""``k2 query …`` against a real catalog (the lead registers the sub-app on the root ``k2`` app)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from k2.cli import query_cmd
from k2.cli.context import Context
from k2.config import load_settings
from tests.unit.query.lakedata import append_commits, asx_frames, new_catalog


@pytest.fixture
def cli(tmp_path: Path) -> typer.Typer:
    data_dir = tmp_path / "k2"
    _catalog, tables = new_catalog(data_dir)
    # open_catalog(settings) finds the same SQLite catalog through the default URI and warehouse.
    frames = asx_frames((date(2014, 3, 11),))
    for kind in ("trades", "quotes"):
        append_commits(tables[kind], frames[kind], 2)
    settings = load_settings(data_dir=data_dir, lake={"catalog_name": "test"})
    root = typer.Typer()

    @root.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.obj = Context(settings=settings, console=Console(width=200), err=Console(stderr=True))

    root.add_typer(query_cmd.app, name="query")
    return root


WINDOW = ["--start", "2014-03-10T23:00:00Z", "--end", "2014-03-10T23:05:00Z"]


def test_commands_print_tables_and_write_files(cli: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["query", "bars", "-s", "BHP", *WINDOW, "-i", "1m"])
    assert shown.exit_code == 0, shown.output
    assert "bars 1m — 5 rows" in shown.output and "BHP" in shown.output
    out = tmp_path / "asof.parquet"
    written = runner.invoke(cli, ["query", "asof", "-s", "BHP", *WINDOW, "-o", str(out)])
    assert written.exit_code == 0, written.output
    assert pq.read_table(out).column("symbol").to_pylist()[0] == "BHP"
    for args in (["trades", "-s", "BHP", *WINDOW], ["quotes", "-s", "BHP", *WINDOW, "--order", "desc"],
                 ["latest", "-s", "BHP"], ["snapshots", "trades"], ["gaps"]):  # fmt: skip
        result = runner.invoke(cli, ["query", *args])
        assert result.exit_code == 0, (args, result.output)


def test_bad_input_is_one_red_line_and_exit_code(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["query", "trades", "-s", "BHP;DROP", *WINDOW])
    assert result.exit_code == 1
    assert "is not a valid symbol" in result.output
