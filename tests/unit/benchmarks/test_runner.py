"""``python -m benchmarks`` runs every benchmark and names the ones that failed.

It used to call each ``main`` in turn with nothing around it: the first benchmark that raised
ended ``make bench`` and the ones after it never ran. bench_sweep's ``main`` took no arguments
at all, so the runner's ``main(["--quick"])`` could only fail.
"""

from __future__ import annotations

import ast
import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import benchmarks
from benchmarks.__main__ import discover, run_all, summary

BENCH_DIR = Path(benchmarks.__file__).resolve().parent


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package of four benchmarks: one raises, one exits 2, one fails to import, one runs."""
    package = tmp_path / "fakebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bench_a.py").write_text("def main(argv):\n    raise RuntimeError('first append failed')\n")
    (package / "bench_b.py").write_text("import sys\ndef main(argv):\n    sys.exit(2)\n")
    (package / "bench_c.py").write_text("import no_such_module_k2\ndef main(argv):\n    pass\n")
    (package / "bench_d.py").write_text(
        f"def main(argv):\n    open({str(tmp_path / 'ran')!r}, 'w').write(' '.join(argv))\n"
    )
    (package / "helper.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fakebench"
    for name in [m for m in sys.modules if m == "fakebench" or m.startswith("fakebench.")]:
        del sys.modules[name]


def test_a_failing_benchmark_does_not_stop_the_ones_after_it(fake_package: str, tmp_path: Path) -> None:
    names = discover(fake_package)
    assert names == ["bench_a", "bench_b", "bench_c", "bench_d"]
    outcomes = run_all(names, ["--quick"], fake_package)
    assert (tmp_path / "ran").read_text() == "--quick"  # the last one ran, with the option
    errors = {o.name: o.error for o in outcomes}
    assert errors["bench_a"] == "RuntimeError: first append failed"
    assert errors["bench_b"] == "SystemExit(2)"
    assert errors["bench_c"] is not None and "no_such_module_k2" in errors["bench_c"]
    assert errors["bench_d"] is None
    text = summary(outcomes)
    assert "3 of 4 benchmark(s) failed" in text and "bench_a: RuntimeError: first append failed" in text


def test_every_benchmark_main_takes_the_runners_arguments() -> None:
    """The runner calls ``main(["--quick"])``: each module's ``main`` must take argv and know --quick."""
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        tree = ast.parse(path.read_text())
        mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert len(mains) == 1, f"{path.name} has no top-level main"
        params = mains[0].args.args
        assert len(params) == 1 and len(mains[0].args.defaults) == 1, f"{path.name}: main(argv=None) expected"
        assert '"--quick"' in path.read_text(), f"{path.name} has no --quick option"


def test_what_a_benchmark_left_in_reference_cycles_is_collected_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench_ingest's pipelines leave Kafka producers in cycles: they must not run on under bench_peers."""
    package = tmp_path / "cyclebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    freed = tmp_path / "freed"
    (package / "bench_a.py").write_text(
        "class Client:\n"
        f"    def __del__(self):\n        open({str(freed)!r}, 'w').close()\n"
        "def main(argv):\n    c = Client()\n    c.me = c\n"
    )
    (package / "bench_b.py").write_text(
        f"import os\ndef main(argv):\n    assert os.path.exists({str(freed)!r}), 'bench_a left a client'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    gc.disable()  # no collection by chance: only the runner's
    try:
        outcomes = run_all(["bench_a", "bench_b"], [], "cyclebench")
    finally:
        gc.enable()
        for name in [m for m in sys.modules if m.split(".")[0] == "cyclebench"]:
            del sys.modules[name]
    assert [o.error for o in outcomes] == [None, None]


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH_DIR.glob("bench_*.py")))
def test_help_prints_usage_and_runs_nothing(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` must explain, not start: bench_width once ran its whole 20-minute benchmark."""
    module = __import__(f"benchmarks.{name}", fromlist=["main"])
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()
