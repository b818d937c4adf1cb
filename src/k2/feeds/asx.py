"""Replay of the ASX equities CSV sample (``trades/ID.csv``, ``quotes/ID.csv``, ``reference/``).

Layout (no header row; ``\\r\\n`` line ends)::

    trades: date MM/DD/YYYY, time HH:MM:SS.mmm, price, volume, qualifiers, venue, buyer_id
    quotes: date, time, bid, ask, bid_volume, ask_volume

The quote order is checked against the data: the third and fourth fields are prices (37.7, 37.73)
and the last two are share counts (300, 600); a one-sided book has ask 0.0 with ask volume 0.
``buyer_id`` has no place in the canonical trade and is not carried (in the sample it is empty
but for a few hundred rows holding price-like numbers). ``trade_id`` is null: the files have none.
Empty qualifiers and venue become null. Quotes are kept as the exchange sent them, including
crossed books during the pre-open auction (bid above ask in about 800 rows).

**Time zone.** The files do not state one; the data does. The first regular trades of each day
come at 09:59:48-10:00:07 for BHP and 10:06:41-10:06:56 for RIO: the ASX's staggered open in local
time (the A-B group opens at 10:00:00 and N-R at 10:06:45, each +-15 s at random). Trading then
runs to 16:00 with closing-auction prints about 16:10, and pre-open quotes start about 07:00. So
the zone is exchange-local ``Australia/Sydney``. In March 2014 Sydney was on daylight time (AEDT,
UTC+11, until 6 April), so 10:00 local on 2014-03-10 is 2014-03-09 23:00 UTC. Conversion goes
through the tz database, so other dates get their own offset; a local time that does not exist
(the spring-forward hour) is a malformed row, and an ambiguous one (the fall-back hour) takes the
earlier instant.

**Sequences.** Per (kind, symbol, trading day) the sequence is the line's rank in file order among
*all* lines of that day, malformed ones included. A bad line therefore leaves a gap where it was
(which the pipeline reports) and its dead letter names the file and line. A line whose date cannot
be read belongs to the day of the nearest readable line above it (below, for leading lines).

**Malformed rows** (every check is vectorised): not UTF-8, wrong field count, unreadable date or
time, price or size not a plain non-negative decimal with at most 6 places, trade price or volume
zero, a non-existent local time. Each becomes a :class:`~k2.stream.dlq.DeadLetter` whose value is
the raw line (without the line end) and whose source is ``file=<path> line=<n>`` (1-based).

**Merge.** All files are merged by exchange time; rows with the same timestamp keep file order,
and across files the order is by symbol, then trades before quotes. The files of the sample are
already in time order, so per-symbol timestamps never go backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from k2.feeds.delivery import Delivery
from k2.feeds.errors import AsxDataError, FeedConfigError
from k2.feeds.reference import EXCHANGE, AsxReference, load_reference
from k2.schemas import frame_schema, message_ids
from k2.stream.dlq import DeadLetter
from k2.types import ASX_TIME_ZONE, TICK_KINDS

__all__ = ["TIME_ZONE", "AsxReplay", "ParsedFile", "parse_file", "read_asx"]

TIME_ZONE = ASX_TIME_ZONE
_FIELDS = {
    "trades": ("date", "time", "price", "size", "qualifiers", "venue", "buyer_id"),
    "quotes": ("date", "time", "bid_price", "ask_price", "bid_size", "ask_size"),
}
_NUMBERS = {"trades": ("price", "size"), "quotes": ("bid_price", "ask_price", "bid_size", "ask_size")}
_DECIMAL_RE = r"^\d+(\.\d{1,6})?$"


@dataclass
class AsxReplay:
    """The merged replay: one delivery in exchange-time order, its times, and the dead letters."""

    delivery: Delivery
    times_us: np.ndarray  # exchange time (UTC microseconds) of each message, in delivery order
    dead_letters: list[DeadLetter] = field(default_factory=list)
    reference: AsxReference | None = None


def _lines(path: Path) -> tuple[list[bytes], list[str | None]]:
    """The file's lines as bytes (line ends removed) and as text (None where not UTF-8)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AsxDataError(f"cannot read: {exc}", path=path) from exc
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()  # the final line end does not start a line
    raw = [line[:-1] if line.endswith(b"\r") else line for line in raw]
    text: list[str | None]
    try:
        decoded = data.decode("utf-8").split("\n")[: len(raw)]
        text = [t[:-1] if t.endswith("\r") else t for t in decoded]
    except UnicodeDecodeError:
        text = []
        for line in raw:
            try:
                text.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                text.append(None)
    return raw, text


def _invalid_reason(kind: str) -> pl.Expr:
    """The first failed check of a row, or null for a good row."""
    width = len(_FIELDS[kind])
    dec = {name: pl.col(name).str.contains(_DECIMAL_RE).fill_null(False) for name in _NUMBERS[kind]}
    checks: list[tuple[pl.Expr, pl.Expr]] = [
        (pl.col("line").is_null(), pl.lit("not UTF-8")),
        (pl.col("_width") != width, pl.format(f"expected {width} fields, got {{}}", pl.col("_width"))),
        (pl.col("_day").is_null(), pl.format("bad date '{}'", pl.col("date"))),
        (pl.col("_time").is_null(), pl.format("bad time '{}'", pl.col("time"))),
    ]
    schema = frame_schema(kind)
    for name, ok in dec.items():
        checks.append((~ok, pl.format(f"bad {name} '{{}}'", pl.col(name))))
    for name in dec:
        # A plain decimal may still not fit the column (13 integer digits in a Decimal(18, 6)): that
        # line is dead-lettered, instead of the final cast failing the whole file.
        fits = pl.col(name).cast(schema[name], strict=False).is_not_null()
        checks.append((~fits, pl.format(f"{name} '{{}}' is out of range for {schema[name]}", pl.col(name))))
    if kind == "trades":
        checks += [
            (pl.col("price").cast(pl.Float64, strict=False) <= 0, pl.lit("zero price")),
            (pl.col("size").cast(pl.Float64, strict=False) <= 0, pl.lit("zero volume")),
        ]
    checks.append((pl.col("_utc").is_null(), pl.lit("local time does not exist in " + TIME_ZONE)))
    return pl.coalesce([pl.when(cond).then(reason) for cond, reason in checks])


@dataclass
class ParsedFile:
    """One file: good rows in file order (canonical, plus ``_line``) and a letter per bad line."""

    rows: pl.DataFrame
    dead_letters: list[DeadLetter]
    dead_letter_days: list[date | None]  # the trading day each bad line belongs to


def parse_file(kind: str, path: Path, symbol: str) -> ParsedFile:
    """One ASX file as canonical rows (file order) plus a dead letter per malformed line.

    Raises:
        AsxDataError: the file cannot be read.
    """
    raw, text = _lines(path)
    names = _FIELDS[kind]
    frame = pl.DataFrame({"line": pl.Series(text, dtype=pl.String)}).with_row_index("_line", offset=1)
    parts = pl.col("line").str.split(",")
    frame = frame.with_columns(
        parts.list.len().fill_null(0).alias("_width"),
        *[parts.list.get(i, null_on_oob=True).alias(name) for i, name in enumerate(names)],
    )
    frame = frame.with_columns(
        pl.col("date").str.strptime(pl.Date, "%m/%d/%Y", strict=False).alias("_day"),
        pl.when(pl.col("time").str.contains(r"^\d{2}:\d{2}:\d{2}\.\d{3}$"))
        .then(pl.col("time").str.strptime(pl.Time, "%H:%M:%S%.3f", strict=False))
        .alias("_time"),
    )
    frame = frame.with_columns(
        pl.col("_day")
        .dt.combine(pl.col("_time"), time_unit="us")
        .dt.replace_time_zone(TIME_ZONE, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .alias("_utc")
    )
    frame = frame.with_columns(_invalid_reason(kind).alias("_reason"))
    frame = frame.with_columns(pl.col("_day").forward_fill().backward_fill().alias("session"))
    frame = frame.with_columns((pl.int_range(pl.len(), dtype=pl.Int64).over("session") + 1).alias("sequence"))

    bad = frame.filter(pl.col("_reason").is_not_null())
    letters = [
        DeadLetter(value=raw[line - 1], reason=reason, source=f"file={path} line={line}", key=symbol.encode())
        for line, reason in zip(bad["_line"], bad["_reason"], strict=True)
    ]
    good = frame.filter(pl.col("_reason").is_null()).with_columns(
        pl.lit(EXCHANGE).alias("exchange"),
        pl.lit(symbol).alias("symbol"),
        pl.col("_utc").dt.cast_time_unit("us").alias("exchange_ts"),
        pl.col("_utc").dt.cast_time_unit("us").alias("ingest_ts"),
    )
    if kind == "trades":
        good = good.with_columns(
            pl.lit(None, dtype=pl.String).alias("trade_id"),
            *[pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in ("qualifiers", "venue")],
        )
    schema = frame_schema(kind)
    good = good.with_columns(message_ids(kind, good).alias("message_id"))
    good = good.select([pl.col(c).cast(t) for c, t in schema.items()] + [pl.col("_line")])
    return ParsedFile(good, letters, bad["session"].to_list())


def read_asx(
    root: Path,
    *,
    symbols: set[str] | None = None,
    days: set[date] | None = None,
) -> AsxReplay:
    """Load the sample at ``root``: every file of the chosen symbols, merged by exchange time.

    Args:
        root: the sample directory (with ``trades/``, ``quotes/`` and ``reference/``).
        symbols: keep only these symbols (None: all).
        days: keep only these trading days, local dates (None: all); dead letters are kept
            for the days their line belongs to.

    Raises:
        AsxDataError: a directory or reference file is missing, or a file id is not in
            ``company_info.csv``.
        FeedConfigError: ``symbols`` names a symbol the sample does not have.
    """
    if not root.is_dir():
        raise AsxDataError(
            "not a directory (expected the ASX sample: trades/, quotes/, reference/)", path=root
        )
    reference = load_reference(root)
    unknown = sorted((symbols or set()) - set(reference.symbols_by_id.values()))
    if unknown:
        known = ", ".join(sorted(reference.symbols_by_id.values()))
        raise FeedConfigError(
            f"not in the sample (it has {known})", option="symbols", value=",".join(unknown)
        )
    files: list[tuple[str, str, Path]] = []
    for kind in TICK_KINDS:
        folder = root / kind
        if not folder.is_dir():
            raise AsxDataError("missing directory", path=folder)
        for path in sorted(folder.glob("*.csv")):
            symbol = reference.symbols_by_id.get(path.stem)
            if symbol is None:
                raise AsxDataError(f"file id {path.stem} is not in reference/company_info.csv", path=path)
            if symbols is None or symbol in symbols:
                files.append((symbol, kind, path))
    files.sort(key=lambda f: (f[0], f[1] != "trades"))
    frames: dict[str, list[pl.DataFrame]] = {"trades": [], "quotes": []}
    letters: list[DeadLetter] = []
    for rank, (symbol, kind, path) in enumerate(files):
        parsed = parse_file(kind, path, symbol)
        good, bad = parsed.rows, parsed.dead_letters
        if days is not None:
            good = good.filter(pl.col("session").is_in(sorted(days)))
            bad = [b for b, day in zip(bad, parsed.dead_letter_days, strict=True) if day in days]
        frames[kind].append(good.with_columns(pl.lit(rank, dtype=pl.Int64).alias("_file")))
        letters.extend(bad)
    merged: dict[str, pl.DataFrame] = {}
    keys: dict[str, np.ndarray] = {}
    for kind, parts in frames.items():
        schema = frame_schema(kind)
        frame = (
            pl.concat(parts)
            if parts
            else pl.DataFrame(schema=schema | {"_line": pl.UInt32, "_file": pl.Int64})
        )
        frame = frame.sort("exchange_ts", "_file", "_line")
        keys[kind] = np.column_stack(
            [
                frame["exchange_ts"].dt.epoch("us").to_numpy(),
                frame["_file"].to_numpy(),
                frame["_line"].to_numpy(),
            ]
        ).astype(np.int64)
        merged[kind] = frame.select(list(schema))
    order = Delivery.interleave(keys["trades"], keys["quotes"], np.zeros((0, 3), dtype=np.int64))
    times = np.concatenate([keys["trades"][:, 0], keys["quotes"][:, 0]])
    times = np.sort(times, kind="stable")
    delivery = Delivery(merged["trades"], merged["quotes"], [], order)
    return AsxReplay(delivery, times, letters, reference)
