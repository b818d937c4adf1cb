"""The root ``k2`` command: a light start (no heavy import for help) and options carried to re-dispatched commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from k2.cli import demo_cmd
from k2.cli.app import app
from k2.cli.context import Root, dispatch

HEAVY = ("pyiceberg", "duckdb", "polars", "confluent_kafka", "pyarrow", "fastapi")


def _imported_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_importing_the_cli_pulls_in_no_heavy_module() -> None:
    assert _imported_after("import k2.cli.app") == []


@pytest.mark.parametrize(
    "args", [["--help"], ["query", "--help"], ["ingest", "--help"], ["lake", "init", "--help"]]
)
def test_help_pulls_in_no_heavy_module_nor_the_settings(args: list[str]) -> None:
    code = (
        "import contextlib, io\nfrom k2.cli.app import app\n"
        f"with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    app({args!r})\n"
        "import sys\nassert 'k2.config' not in sys.modules, 'help loaded the settings'"
    )
    assert _imported_after(code) == []


def _toml(tmp_path: Path) -> Path:
    config = tmp_path / "x.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n\n[kafka]\nport = 29999\n\n[lake]\nnamespace = "fromtoml"\n'
    )
    return config


def test_dispatch_runs_a_command_with_the_given_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = Root(_toml(tmp_path)).context()
    dispatch(context, ["config", "show", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["kafka"]["port"] == 29999 and shown["lake"]["namespace"] == "fromtoml"


def test_demo_carries_the_config_file_and_its_names_to_every_k2_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`k2 -c x.toml demo`: a k2 process the demo starts sees x.toml's values plus the demo's own names."""
    from k2.cli.demo import chapters
    from k2.cli.demo.runner import Chapter
    from k2.cli.demo.stage import Stage

    shown: list[dict[str, Any]] = []

    def show(stage: Stage) -> None:
        shown.append(stage.k2("show", ["config", "show", "--json"]).json_output())
        stage.check("shown", True)

    monkeypatch.setattr(chapters, "CHAPTERS", [Chapter("Show", "the configuration", show)])
    result = CliRunner().invoke(app, ["-c", str(_toml(tmp_path)), "demo", "--fast"])
    assert result.exit_code == 0, result.output
    [settings] = shown
    assert settings["kafka"]["port"] == 29999  # from x.toml
    assert Path(settings["data_dir"]) == (tmp_path / "data").resolve()
    assert settings["lake"]["namespace"].startswith("demo") and settings["kafka"]["topic_prefix"].startswith(
        "demo"
    )
    assert settings["state"]["reorder_window"] == demo_cmd.REORDER_WINDOW


def test_a_bad_config_file_is_one_red_line_when_a_command_needs_the_settings(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka]\nport = 0\n")
    result = CliRunner().invoke(app, ["-c", str(bad), "config", "show"])
    assert result.exit_code != 0 and "kafka.port" in result.output


def test_ingest_refuses_an_unknown_start_level_before_it_touches_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ingest", "--level", "panic"], env={"K2_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert "'panic' is not one of soft, graceful, aggressive" in result.output
    assert not (tmp_path / "lake").exists()
