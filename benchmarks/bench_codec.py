"""Avro codec throughput: K2's vectorised batch codec against fastavro, one record at a time.

    python -m benchmarks.bench_codec [--quick] [--rows N] [--repeats R] [--kind trades|quotes]

Encode: ``encode_batch`` (frame -> framed payloads) against ``fastavro.schemaless_writer`` per
record plus the same 10-byte header. Decode: ``decode_batch`` (payloads -> frame in the canonical
schema) against ``fastavro.schemaless_reader`` per record. The baselines start from ready-made
Python dicts and end at dicts, which flatters them: a real per-record pipeline also converts
frames to records and back. Each figure is the median of the repeats, all measured in this run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from datetime import date

import fastavro
import numpy as np
import polars as pl
import pyarrow as pa

from benchmarks.results import write_result
from k2.schemas import avro_schema, decode_batch, encode_batch, frame_schema, message_ids

__all__ = ["decimals", "main", "make_ticks"]

_SYMBOLS = np.array(["BHP", "RIO", "CBA", "WBC", "NAB", "ANZ", "CSL", "WES", "MQG", "TLS", "WOW", "FMG"])


def decimals(unscaled: np.ndarray) -> pl.Series:
    """A Decimal(18, 6) series from unscaled integers, via Arrow's 128-bit buffer (no Python objects)."""
    u = np.asarray(unscaled, dtype=np.int64)
    words = np.empty((len(u), 2), dtype=np.int64)
    words[:, 0], words[:, 1] = u, u >> 63
    arr = pa.Array.from_buffers(pa.decimal128(18, 6), len(u), [None, pa.py_buffer(words.tobytes())])
    return pl.Series(pl.from_arrow(arr))


def make_ticks(kind: str, n: int, seed: int = 0) -> pl.DataFrame:
    """n realistic ticks of a kind in the canonical schema, built with NumPy (no simulator needed)."""
    rng = np.random.default_rng(seed)
    symbols = _SYMBOLS[rng.integers(0, len(_SYMBOLS), n)]
    start = np.datetime64("2014-03-09T23:00:00", "us").astype(np.int64)
    exchange_ts = start + np.cumsum(rng.integers(0, 400, n))
    mid = rng.integers(5_000_000, 120_000_000, n)  # dollars, in micro-units
    frame = pl.DataFrame({"exchange": "ASX", "symbol": symbols, "session": date(2014, 3, 10)}).with_columns(
        (pl.int_range(pl.len()).over("symbol") + 1).alias("sequence"),
        pl.Series("exchange_ts", exchange_ts).cast(pl.Datetime("us", "UTC")),
        pl.Series("ingest_ts", exchange_ts + rng.integers(200, 5_000, n)).cast(pl.Datetime("us", "UTC")),
    )
    if kind == "trades":
        frame = frame.with_columns(
            decimals(mid).alias("price"),
            decimals(rng.integers(1, 20_000, n) * 1_000_000).alias("size"),
            pl.lit(None, pl.String).alias("trade_id"),
            pl.Series("qualifiers", np.array(["XT", "S", "", "LT"])[rng.integers(0, 4, n)]),
            pl.lit("ASX").alias("venue"),
        )
    else:
        frame = frame.with_columns(
            decimals(mid - 5_000).alias("bid_price"),
            decimals(mid + 5_000).alias("ask_price"),
            decimals(rng.integers(0, 50_000, n) * 1_000_000).alias("bid_size"),
            decimals(rng.integers(0, 50_000, n) * 1_000_000).alias("ask_size"),
        )
    frame = frame.with_columns(message_ids(kind, frame).alias("message_id"))
    return frame.select([pl.col(c).cast(t) for c, t in frame_schema(kind).items()])


def _median_rate(fn: Callable[[], object], rows: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return rows / statistics.median(times)


def _fastavro_encode(kind: str, records: list[dict[str, object]]) -> list[bytes]:
    schema = avro_schema(kind)
    header = b"\xc3\x01" + schema.fingerprint
    out = []
    for record in records:
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, schema.parsed, record)
        out.append(buf.getvalue())
    return out


def _fastavro_decode(kind: str, payloads: list[bytes]) -> list[object]:
    schema = avro_schema(kind)
    known = {schema.fingerprint: schema.parsed}
    out = []
    for payload in payloads:
        parsed = known[payload[2:10]]
        out.append(fastavro.schemaless_reader(io.BytesIO(payload[10:]), parsed, None))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run (fewer rows)")
    parser.add_argument("--rows", type=int, default=None, help="rows for the vectorised codec (200000)")
    parser.add_argument("--baseline-rows", type=int, default=None, help="rows for fastavro (30000)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per measurement (median reported)")
    parser.add_argument("--kind", choices=["trades", "quotes"], default="trades")
    args = parser.parse_args(argv)
    rows = args.rows or (50_000 if args.quick else 200_000)
    base_rows = min(rows, args.baseline_rows or (10_000 if args.quick else 30_000))

    frame = make_ticks(args.kind, rows)
    payloads = encode_batch(args.kind, frame)
    decoded = decode_batch(args.kind, payloads)
    assert decoded.ok and decoded.frame.equals(frame), "round trip changed the data"
    records = frame.head(base_rows).to_dicts()
    assert _fastavro_encode(args.kind, records) == payloads[:base_rows], "encodings differ from fastavro"

    results = {
        ("encode", "k2 encode_batch"): _median_rate(
            lambda: encode_batch(args.kind, frame), rows, args.repeats
        ),
        ("encode", "fastavro per record"): _median_rate(
            lambda: _fastavro_encode(args.kind, records), base_rows, args.repeats
        ),
        ("decode", "k2 decode_batch"): _median_rate(
            lambda: decode_batch(args.kind, payloads), rows, args.repeats
        ),
        ("decode", "fastavro per record"): _median_rate(
            lambda: _fastavro_decode(args.kind, payloads[:base_rows]), base_rows, args.repeats
        ),
    }
    size = sum(map(len, payloads)) / rows
    print(
        f"codec benchmark: {args.kind}, {rows:,} rows (fastavro {base_rows:,}), {size:.0f} bytes/payload, "
        f"median of {args.repeats}"
    )
    print(f"{'op':<8}{'implementation':<24}{'rows/s':>14}{'MB/s':>9}{'ratio':>9}")
    for (op, name), rate in results.items():
        base = results[(op, "fastavro per record")]
        print(f"{op:<8}{name:<24}{rate:>14,.0f}{rate * size / 1e6:>9.1f}{rate / base:>8.1f}x")
    encode = results[("encode", "k2 encode_batch")] / results[("encode", "fastavro per record")]
    decode = results[("decode", "k2 decode_batch")] / results[("decode", "fastavro per record")]
    print(f"k2 / fastavro: encode {encode:.1f}x, decode {decode:.1f}x")
    figures = {
        f"{op}_{'k2' if name.startswith('k2') else 'fastavro'}_rows_per_s": rate
        for (op, name), rate in results.items()
    }
    write_result(
        "bench_codec",
        {**figures, "encode_ratio": encode, "decode_ratio": decode, "bytes_per_payload": size},
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
