"""The ASX loader on the real sample, and on corrupted copies of it."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from k2.feeds.asx import AsxReplay, parse_file, read_asx
from k2.feeds.errors import AsxDataError, FeedConfigError
from k2.schemas import frame_schema, message_ids

IDS = {"BHP": "7078", "RIO": "7458", "DVN": "7181", "MWR": "3153"}


@pytest.fixture(scope="module")
def replay(asx_data: Path) -> AsxReplay:
    return read_asx(asx_data)


def _lines_per_day(path: Path) -> Counter[date]:
    prefixes = Counter(line[:10] for line in path.read_bytes().splitlines())
    return Counter({datetime.strptime(p.decode(), "%m/%d/%Y").date(): n for p, n in prefixes.items()})


def test_every_line_lands_once_per_symbol_and_day(replay: AsxReplay, asx_data: Path) -> None:
    assert replay.dead_letters == []
    for kind in ("trades", "quotes"):
        frame = replay.delivery.frame(kind)
        got = {(s, d): n for s, d, n in frame.group_by("symbol", "session").len().iter_rows()}
        expected = {
            (symbol, day): n
            for symbol, file_id in IDS.items()
            for day, n in _lines_per_day(asx_data / kind / f"{file_id}.csv").items()
        }
        assert got == expected
    assert replay.delivery.trades.height == 200_545 and replay.delivery.quotes.height == 169_629


def test_frames_are_canonical_with_sequences_from_file_order(replay: AsxReplay) -> None:
    for kind in ("trades", "quotes"):
        frame = replay.delivery.frame(kind)
        assert frame.schema == pl.Schema(frame_schema(kind))
        assert frame["exchange"].unique().to_list() == ["ASX"]
        assert frame["message_id"].equals(message_ids(kind, frame))
        assert frame["message_id"].is_unique().all()
        per = frame.group_by("symbol", "session").agg(
            pl.len(), pl.col("sequence").min().alias("lo"), pl.col("sequence").max().alias("hi")
        )
        assert (per["lo"] == 1).all() and (per["hi"] == per["len"]).all()


def test_merge_is_in_exchange_time_and_keeps_file_order(replay: AsxReplay) -> None:
    assert np.all(np.diff(replay.times_us) >= 0)
    assert len(replay.times_us) == len(replay.delivery)
    for kind in ("trades", "quotes"):
        frame = replay.delivery.frame(kind)
        steps = frame.group_by("symbol", "session", maintain_order=True).agg(
            pl.col("exchange_ts").diff().min().alias("dt"), pl.col("sequence").diff().min().alias("ds")
        )
        assert steps["dt"].drop_nulls().min().total_seconds() >= 0  # never backwards per symbol
        assert (steps["ds"].drop_nulls() == 1).all()  # same-millisecond rows keep file order


def test_local_sydney_time_becomes_utc(replay: AsxReplay) -> None:
    trades = replay.delivery.trades
    bhp = trades.filter(pl.col("symbol") == "BHP").row(0, named=True)
    assert bhp["exchange_ts"] == datetime(2014, 3, 9, 20, 57, 14, 754_000, tzinfo=UTC)  # 07:57:14.754 AEDT
    assert bhp["session"] == date(2014, 3, 10)
    dvn = trades.filter(pl.col("symbol") == "DVN").row(0, named=True)
    assert dvn["exchange_ts"] == datetime(2014, 3, 9, 23, 13, 34, 553_000, tzinfo=UTC)  # 10:13:34.553 AEDT
    assert str(dvn["price"]) == "0.670000" and dvn["qualifiers"] == "0" and dvn["venue"] is None
    mwr = replay.delivery.quotes.filter(pl.col("symbol") == "MWR").row(0, named=True)
    assert (str(mwr["bid_price"]), str(mwr["ask_price"]), str(mwr["bid_size"]), str(mwr["ask_size"])) == (
        "1.110000",
        "0.000000",
        "10300.000000",
        "0.000000",
    )  # a one-sided book: ask 0 with size 0


def test_other_offsets_and_a_missing_local_hour(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(
        b"06/10/2014,10:00:00.000,1.5,100,0,,\r\n"  # AEST, UTC+10
        b"10/05/2014,02:30:00.000,1.5,100,0,,\r\n"  # clocks jump 02:00 -> 03:00: no such time
        b"10/05/2014,03:30:00.000,1.5,100,0,,\r\n"  # AEDT again, UTC+11
    )
    parsed = parse_file("trades", path, "XYZ")
    assert parsed.rows["exchange_ts"].to_list() == [
        datetime(2014, 6, 10, 0, 0, tzinfo=UTC),
        datetime(2014, 10, 4, 16, 30, tzinfo=UTC),
    ]
    assert [(d.source.rsplit(" ", 1)[1], d.reason) for d in parsed.dead_letters] == [
        ("line=2", "local time does not exist in Australia/Sydney")
    ]


BAD_LINES = {
    # line number in the corrupted file -> (raw bytes, expected reason fragment)
    3: (b"garbage", "expected 7 fields, got 1"),
    6: (b"03/10/2014,10:30:00.000,-0.67,100,0,,", "bad price"),
    7: (b"03/10/2014,25:61:00.000,0.67,100,0,,", "bad time"),
    10: (b"13/45/2014,10:31:00.000,0.67,100,0,,", "bad date"),
    11: (b"03/10/2014,10:32:00.000,0.67,abc,0,,", "bad size"),
    12: (b"03/10/2014,10:33:00.000,0.67,100,0,,,extra", "expected 7 fields, got 8"),
    20: (b"03/10/2014,10:40:00.000,0.00,100,0,,", "zero price"),
    21: (b"03/10/2014,10:41:00.000,0.6\xff7,100,0,,", "not UTF-8"),
    25: (b"", "expected 7 fields, got 1"),
}


def _corrupted_copy(asx_data: Path, root: Path) -> tuple[Path, list[bytes]]:
    shutil.copytree(asx_data / "reference", root / "reference")
    for kind in ("trades", "quotes"):
        (root / kind).mkdir()
    shutil.copy(asx_data / "quotes" / "7181.csv", root / "quotes" / "7181.csv")
    original = (asx_data / "trades" / "7181.csv").read_bytes().split(b"\r\n")[:-1]
    lines = list(original)
    for number in sorted(BAD_LINES):
        lines.insert(number - 1, BAD_LINES[number][0])
    (root / "trades" / "7181.csv").write_bytes(b"".join(line + b"\r\n" for line in lines))
    return root / "trades" / "7181.csv", original


def test_a_corrupted_file_sends_exactly_its_bad_lines_to_the_dlq(asx_data: Path, tmp_path: Path) -> None:
    path, original = _corrupted_copy(asx_data, tmp_path)
    replay = read_asx(tmp_path)
    letters = replay.dead_letters
    assert [d.source for d in letters] == [f"file={path} line={n}" for n in sorted(BAD_LINES)]
    for letter, number in zip(letters, sorted(BAD_LINES), strict=True):
        raw, reason = BAD_LINES[number]
        assert letter.value == raw and reason in letter.reason and letter.key == b"DVN"
    trades = replay.delivery.trades
    assert trades.height == len(original)  # every good line, nothing else
    # a bad line keeps its place in the day's numbering: the trades of 10 March have holes there
    day = trades.filter(pl.col("session") == date(2014, 3, 10))["sequence"].to_list()
    missing = sorted(set(range(1, max(day) + 1)) - set(day))
    assert missing == [3, 6, 7, 10, 11, 12, 20, 21, 25]


def test_filters_and_unknown_symbols(asx_data: Path) -> None:
    replay = read_asx(asx_data, symbols={"MWR"}, days={date(2014, 3, 10)})
    assert set(replay.delivery.trades["symbol"]) == {"MWR"}
    assert replay.delivery.trades.height == 4 and replay.delivery.quotes.height == 9  # grep -c 03/10/2014
    assert replay.delivery.quotes["session"].unique().to_list() == [date(2014, 3, 10)]
    with pytest.raises(FeedConfigError, match="XYZ"):
        read_asx(asx_data, symbols={"XYZ"})


def test_missing_pieces_are_named(asx_data: Path, tmp_path: Path) -> None:
    with pytest.raises(AsxDataError, match="company_info"):
        read_asx(tmp_path)
    shutil.copytree(asx_data / "reference", tmp_path / "reference")
    (tmp_path / "trades").mkdir()
    (tmp_path / "quotes").mkdir()
    (tmp_path / "trades" / "9999.csv").write_text("03/10/2014,10:00:00.000,1,1,0,,\n")
    with pytest.raises(AsxDataError, match="9999"):
        read_asx(tmp_path)


def test_a_price_too_large_for_the_column_is_one_dead_letter_not_a_failed_file(tmp_path: Path) -> None:
    lines = [
        "03/11/2014,10:00:00.123,35.94,100,XT,,",
        "03/11/2014,10:00:01.123,1234567890123,100,XT,,",  # 13 integer digits: Decimal(18, 6) holds 12
        "03/11/2014,10:00:01.500,35.95,99999999999999.5,XT,,",
        "03/11/2014,10:00:02.123,999999999999.999999,100,XT,,",  # the largest that fits
    ]
    path = tmp_path / "7078.csv"
    path.write_text("\n".join(lines) + "\n")
    parsed = parse_file("trades", path, "BHP")
    assert parsed.rows["_line"].to_list() == [1, 4]
    assert [(lt.source.rsplit(" ", 1)[1], lt.value) for lt in parsed.dead_letters] == [
        ("line=2", lines[1].encode()),
        ("line=3", lines[2].encode()),
    ]
    assert "price '1234567890123' is out of range" in parsed.dead_letters[0].reason
    assert "size" in parsed.dead_letters[1].reason
