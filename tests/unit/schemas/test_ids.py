"""Message ids follow the contract's formula exactly."""

from __future__ import annotations

from datetime import date
from hashlib import blake2b

import polars as pl
import pytest

from k2.schemas import SchemaError, message_id, message_ids


def test_message_ids_follow_the_contract_formula() -> None:
    frame = pl.DataFrame(
        {
            "exchange": ["ASX", "SIM", "ASX"],
            "symbol": ["DVN", "Ω", "BHP"],
            "session": [date(2014, 3, 10), date(1999, 1, 2), date(2014, 3, 11)],
            "sequence": [1, 2**40, 123],
        }
    )
    ids = message_ids("quotes", frame)
    assert ids.name == "message_id" and ids.dtype == pl.String
    for row, got in zip(frame.iter_rows(named=True), ids.to_list(), strict=True):
        text = f"quotes|{row['exchange']}|{row['symbol']}|{row['session'].isoformat()}|{row['sequence']}"
        assert got == blake2b(text.encode(), digest_size=16).hexdigest()
        assert len(got) == 32 and got == got.lower()
    assert message_ids("trades", frame)[0] == "ea7c91a52d7aac4c7c9dd2433de4645e"
    assert message_id("trades", "ASX", "DVN", "2014-03-10", 1) == "ea7c91a52d7aac4c7c9dd2433de4645e"


def test_message_ids_refuse_reference_kinds_missing_and_null_keys() -> None:
    frame = pl.DataFrame(
        {"exchange": ["ASX"], "symbol": ["BHP"], "session": [date(2014, 3, 10)], "sequence": [1]}
    )
    with pytest.raises(SchemaError):
        message_ids("instruments", frame)
    with pytest.raises(SchemaError):
        message_ids("trades", frame.drop("sequence"))
    with pytest.raises(SchemaError):
        message_ids("trades", frame.with_columns(pl.lit(None, pl.String).alias("symbol")))
