"""Reference data of the ASX sample: instruments and corporate actions, as canonical frames.

``reference/company_info.csv`` maps a file id (``company_id``) to its symbol and describes the
listing; ``dividends.csv``, ``stock_splits.csv`` and ``mergers.csv`` hold corporate actions (a file
with no rows says ``--- NO RECORDS TO REPORT ---``). Dates are ``MM/DD/YYYY`` like the tick files.
The frames follow the ``k2.Instrument`` and ``k2.CorporateAction`` schemas; what those have no
field for (gross amount, currency, record and pay dates) goes to ``details`` as JSON text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from k2.feeds.errors import AsxDataError
from k2.schemas import frame_schema

__all__ = ["AsxReference", "load_reference"]

EXCHANGE = "ASX"
_DATE = "%m/%d/%Y"


@dataclass(frozen=True)
class AsxReference:
    """The sample's reference data."""

    symbols_by_id: dict[str, str]
    instruments: pl.DataFrame
    corporate_actions: pl.DataFrame


def _read(path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    """A reference CSV as strings, without the 'no records' marker line.

    Raises:
        AsxDataError: the file is missing, unreadable or lacks a required column.
    """
    try:
        frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise AsxDataError(f"cannot read reference file: {exc}", path=path) from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise AsxDataError(f"missing column(s) {missing}", path=path)
    first = frame.columns[0]
    return frame.filter(~pl.col(first).str.starts_with("---").fill_null(False))


def _date(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars().str.strptime(pl.Date, _DATE, strict=False)


def _instruments(root: Path) -> tuple[dict[str, str], pl.DataFrame]:
    path = root / "reference" / "company_info.csv"
    raw = _read(path, ("company_id", "symbol", "company_name", "ISIN", "start_date", "end_date"))
    frame = raw.select(
        pl.lit(EXCHANGE).alias("exchange"),
        pl.col("symbol").str.strip_chars(),
        pl.col("ISIN").str.strip_chars().alias("isin"),
        pl.col("company_name").str.strip_chars().alias("name"),
        _date("start_date").alias("listing_start"),
        _date("end_date").alias("listing_end"),
    )
    bad = frame.filter(pl.col("listing_start").is_null() | pl.col("symbol").is_null())
    if bad.height:
        raise AsxDataError(f"{bad.height} instrument row(s) without symbol or listing date", path=path)
    ids = dict(zip(raw["company_id"].str.strip_chars(), frame["symbol"], strict=True))
    return ids, frame.select([pl.col(c).cast(t) for c, t in frame_schema("instruments").items()])


def _actions(root: Path, ids: dict[str, str]) -> pl.DataFrame:
    rows: list[dict[str, object]] = []
    divs = _read(root / "reference" / "dividends.csv", ("company id", "ex_date", "net amount"))
    for rec in divs.iter_rows(named=True):
        details = {
            k: rec.get(c)
            for k, c in (
                ("declared_date", "declared date"),
                ("record_date", "record_date"),
                ("pay_date", "pay_date"),
                ("gross_amount", "gross amount"),
                ("currency", "currency type"),
            )
        }
        rows.append(
            {
                "id": rec["company id"],
                "kind": "dividend",
                "ex": rec["ex_date"],
                "value": rec["net amount"],
                "details": json.dumps(details, sort_keys=True),
            }
        )
    for name, kind in (("stock_splits.csv", "split"), ("mergers.csv", "merger")):
        table = _read(root / "reference" / name, ("company id", "effective date", "ratio"))
        for rec in table.iter_rows(named=True):
            rows.append(
                {
                    "id": rec["company id"],
                    "kind": kind,
                    "ex": rec["effective date"],
                    "value": rec["ratio"],
                    "details": json.dumps({"ratio": rec["ratio"]}),
                }
            )
    schema = {"id": pl.String, "kind": pl.String, "ex": pl.String, "value": pl.String, "details": pl.String}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    frame = frame.select(
        pl.lit(EXCHANGE).alias("exchange"),
        pl.col("id").str.strip_chars().replace_strict(ids, default=None).alias("symbol"),
        pl.col("kind"),
        _date("ex").alias("ex_date"),
        pl.col("value").str.strip_chars().cast(pl.Decimal(18, 6), strict=False),
        pl.col("details"),
    ).filter(pl.col("symbol").is_not_null())  # actions of companies outside the sample
    return frame.select([pl.col(c).cast(t) for c, t in frame_schema("corporate_actions").items()])


def load_reference(root: Path) -> AsxReference:
    """Instruments and corporate actions of the sample rooted at ``root``.

    Raises:
        AsxDataError: a reference file is missing or malformed.
    """
    ids, instruments = _instruments(root)
    return AsxReference(ids, instruments, _actions(root, ids))
