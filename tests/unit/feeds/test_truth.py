"""The truth file: written atomically, read back, refused when it is something else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k2.feeds.errors import TruthFileError
from k2.feeds.truth import TRUTH_FORMAT, load_truth
from tests.unit.feeds.conftest import Run


def test_truth_round_trips_through_json(faulty: Run, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "truth.json"
    faulty.sim.write_truth(path)
    data = load_truth(path)
    assert data == json.loads(json.dumps(faulty.truth, default=str))
    assert data["format"] == TRUTH_FORMAT and data["exchange"] == "SIM" and data["complete"] is True
    assert data["config"]["faults"]["gap_rate"] == 0.01 and data["config"]["market"]["start"] == "2024-01-02"
    gap = data["kinds"]["trades"]["dropped"][0]
    assert set(gap) == {"exchange", "symbol", "session", "first", "last"} and gap["first"] <= gap["last"]
    reset = data["session_resets"][0]
    assert reset["exchange_ts"].endswith("+00:00") and set(reset["last_sequence"]) == {"trades", "quotes"}
    assert not list(path.parent.glob("*.tmp"))


def test_other_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TruthFileError):
        load_truth(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text('{"format": "something else"}')
    with pytest.raises(TruthFileError, match=TRUTH_FORMAT):
        load_truth(tmp_path / "x.json")
