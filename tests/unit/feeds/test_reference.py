"""Reference data of the ASX sample: instruments and corporate actions in the canonical schemas."""

from __future__ import annotations

import json
import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from k2.feeds.errors import AsxDataError
from k2.feeds.reference import load_reference
from k2.schemas import frame_schema


def test_instruments_and_file_ids(asx_data: Path) -> None:
    ref = load_reference(asx_data)
    assert ref.symbols_by_id == {"3153": "MWR", "7078": "BHP", "7181": "DVN", "7458": "RIO"}
    assert ref.instruments.schema == pl.Schema(frame_schema("instruments"))
    bhp = ref.instruments.filter(pl.col("symbol") == "BHP").row(0, named=True)
    assert bhp == {
        "exchange": "ASX",
        "symbol": "BHP",
        "isin": "AU000000BHP4",
        "name": "BHP BILLITON LTD",
        "listing_start": date(2008, 5, 7),
        "listing_end": date(2014, 3, 31),
    }


def test_dividends_become_corporate_actions(asx_data: Path) -> None:
    actions = load_reference(asx_data).corporate_actions
    assert actions.schema == pl.Schema(frame_schema("corporate_actions"))
    assert actions.height == 2  # splits and mergers say "--- NO RECORDS TO REPORT ---"
    rio = actions.filter(pl.col("symbol") == "RIO").row(0, named=True)
    assert (rio["kind"], rio["ex_date"], rio["value"]) == ("dividend", date(2014, 3, 5), Decimal("1.2014"))
    details = json.loads(rio["details"])
    assert details["currency"] == "AUD" and details["pay_date"] == "04/10/2014"


def test_a_split_is_read_and_a_missing_file_is_named(asx_data: Path, tmp_path: Path) -> None:
    shutil.copytree(asx_data / "reference", tmp_path / "reference")
    (tmp_path / "reference" / "stock_splits.csv").write_text(
        "company id,effective date,ratio\n7078,03/12/2014,2\n"
    )
    actions = load_reference(tmp_path).corporate_actions
    split = actions.filter(pl.col("kind") == "split").row(0, named=True)
    assert (split["symbol"], split["ex_date"], split["value"]) == ("BHP", date(2014, 3, 12), Decimal(2))
    (tmp_path / "reference" / "mergers.csv").unlink()
    with pytest.raises(AsxDataError, match=r"mergers\.csv"):
        load_reference(tmp_path)
