"""The market simulator: clean ticks from :mod:`k2.feeds.market`, faults from :mod:`k2.feeds.faults`,
and the exact record of both in :mod:`k2.feeds.truth`.

``Simulator(config).deliveries(count=…)`` yields :class:`~k2.feeds.delivery.Delivery` batches (one
per generated chunk, tens of thousands of messages) in the order the feed sends them: the
interleaving of all symbols by exchange time, with a symbol's duplicates and reorders only moving
its own ticks. Each batch is recorded in ``simulator.truth`` as it is yielded, so a caller must send
every batch it takes (the CLI finishes the batch in hand when interrupted).

Determinism: one ``numpy.random.SeedSequence(seed)`` is split into independent generators for the
market, the session resets, the fault choices and the malformed bytes. The same seed and options
give identical frames and truth; changing only fault rates (not ``reset_rate``) leaves the clean
stream unchanged, which is what lets a test apply the truth to a clean run and compare.

Frames are in the canonical schemas, exchange ``SIM``. ``ingest_ts`` equals ``exchange_ts`` here;
the caller that hands a batch to Kafka stamps the real time
(:func:`k2.feeds.frames.stamp_ingest`), so a duplicate differs from its original only there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from k2.feeds.delivery import Delivery, RawMessage
from k2.feeds.faults import MALFORMED, FaultConfig, FaultInjector, MalformedSpec
from k2.feeds.frames import MICROS, decimal_from_micros, utc_from_micros
from k2.feeds.market import CleanChunk, MarketConfig, MarketModel
from k2.feeds.truth import GroundTruth
from k2.schemas import frame_schema, message_ids
from k2.types import TICK_KINDS

__all__ = ["Encoder", "Simulator", "SimulatorConfig"]

#: Encodes a canonical frame of one kind to one K2 wire payload per row.
Encoder = Callable[[str, pl.DataFrame], list[bytes]]
_HELPERS = ("_pos", "_sym", "_sess")
_KEYS = ("_anchor", "_class", "_tie")


@dataclass(frozen=True)
class SimulatorConfig:
    """A whole simulation: the market, the faults, the seed and the exchange code."""

    market: MarketConfig
    faults: FaultConfig = field(default_factory=FaultConfig)
    seed: int = 0
    exchange: str = "SIM"


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


class Simulator:
    """Generates deliveries and keeps their ground truth."""

    def __init__(
        self, config: SimulatorConfig, *, encode: Encoder | None = None, keep_truth: bool = True
    ) -> None:
        """Build the market, the injector and the truth.

        Args:
            config: the simulation.
            encode: the wire encoder for malformed-payload templates (default: K2's own).
            keep_truth: record the ground truth; an endless feed nobody checks turns it off, as the
                truth keeps every message id.
        """
        self.config = config
        self.keep_truth = keep_truth
        market_seq, reset_seq, fault_seq, raw_seq = np.random.SeedSequence(config.seed).spawn(4)
        self.market = MarketModel(
            config.market,
            np.random.default_rng(market_seq),
            np.random.default_rng(reset_seq),
            reset_rate=config.faults.reset_rate,
        )
        self._faults = FaultInjector(config.faults, np.random.default_rng(fault_seq))
        self._raw_rng = np.random.default_rng(raw_seq)
        self._encode = encode
        self._names = pl.Series("symbol", config.market.symbols, dtype=pl.String)
        self.truth = GroundTruth(
            exchange=config.exchange,
            seed=config.seed,
            symbols=config.market.symbols,
            session_date=self.session_date,
            config={
                "market": {k: _plain(v) for k, v in dataclasses.asdict(config.market).items()},
                "faults": dataclasses.asdict(config.faults),
            },
        )

    def session_date(self, index: int) -> date:
        """The trading date of session index ``index`` (0 = the first trading day)."""
        return self.market.session_dates(np.array([index]))[0].astype(date)  # type: ignore[no-any-return]

    def deliveries(self, count: int | None = None, seconds: int | None = None) -> Iterator[Delivery]:
        """Batches until ``count`` clean ticks are generated or ``seconds`` of trading time pass.

        With neither, the stream is endless (the caller stops taking batches).
        """
        produced = 0
        while True:
            remaining = None if count is None else count - produced
            chunk = self.market.next_chunk(limit=remaining, until_s=seconds)
            if chunk is None:
                return
            produced += chunk.events.height
            yield self._deliver(chunk)

    def write_truth(self, path: Path) -> None:
        """Write the ground truth of every batch yielded so far (format: :mod:`k2.feeds.truth`)."""
        self.truth.write(path)

    def _deliver(self, chunk: CleanChunk) -> Delivery:
        frames = {
            kind: self._canonical(kind, chunk.events.filter(pl.col("_kind") == code))
            for code, kind in enumerate(TICK_KINDS)
        }
        plans = {kind: self._faults.plan(kind, frame) for kind, frame in frames.items()}
        specs = self._faults.malformed({kind: frame.height for kind, frame in frames.items()})
        delivered = {kind: plan.delivered.sort(*_KEYS) for kind, plan in plans.items()}
        raw, raw_keys = self._malformed(specs, frames)
        order = Delivery.interleave(
            delivered["trades"].select(_KEYS).to_numpy().astype(np.int64),
            delivered["quotes"].select(_KEYS).to_numpy().astype(np.int64),
            raw_keys,
        )
        if self.keep_truth:
            for kind in frames:
                self.truth.record(kind, frames[kind], plans[kind], delivered[kind])
            for message in raw:
                self.truth.record_malformed(message.kind, message.reason)
            self.truth.record_resets(chunk.resets)
        return Delivery(
            trades=delivered["trades"].select(list(frame_schema("trades"))),
            quotes=delivered["quotes"].select(list(frame_schema("quotes"))),
            raw=raw,
            order=order,
        )

    def _canonical(self, kind: str, events: pl.DataFrame) -> pl.DataFrame:
        """Canonical rows of one kind (plus the helper columns the injector needs)."""
        dates = self.market.session_dates(events["_sess"].to_numpy())
        session = pl.Series("session", dates.astype("datetime64[D]")).cast(pl.Date)
        symbol = self._names.gather(events["_sym"])
        exchange_ts = utc_from_micros("exchange_ts", events["exchange_us"].to_numpy())
        columns: dict[str, Any] = {
            "exchange": pl.Series("exchange", [self.config.exchange] * events.height, dtype=pl.String),
            "symbol": symbol,
            "session": session,
            "sequence": events["sequence"],
            "exchange_ts": exchange_ts,
            "ingest_ts": exchange_ts.alias("ingest_ts"),
        }
        if kind == "trades":
            columns |= {
                "price": decimal_from_micros("price", events["price"].to_numpy()),
                "size": decimal_from_micros("size", events["size"].to_numpy() * MICROS),
            }
        else:
            columns |= {
                "bid_price": decimal_from_micros("bid_price", events["bid"].to_numpy()),
                "ask_price": decimal_from_micros("ask_price", events["ask"].to_numpy()),
                "bid_size": decimal_from_micros("bid_size", events["bid_size"].to_numpy() * MICROS),
                "ask_size": decimal_from_micros("ask_size", events["ask_size"].to_numpy() * MICROS),
            }
        frame = pl.DataFrame(columns)
        if kind == "trades":
            frame = frame.with_columns(
                pl.concat_str(
                    pl.col("symbol"),
                    pl.col("session").dt.strftime("%Y%m%d"),
                    pl.col("sequence"),
                    separator="-",
                ).alias("trade_id"),
                pl.lit(None, dtype=pl.String).alias("qualifiers"),
                pl.lit(None, dtype=pl.String).alias("venue"),
            )
        frame = frame.with_columns(message_ids(kind, frame).alias("message_id"))
        schema = frame_schema(kind)
        return pl.concat(
            [frame.select([pl.col(c).cast(t) for c, t in schema.items()]), events.select(_HELPERS)],
            how="horizontal",
        )

    def _malformed(
        self, specs: list[MalformedSpec], frames: dict[str, pl.DataFrame]
    ) -> tuple[list[RawMessage], np.ndarray]:
        """Build the payloads of this chunk's malformed faults, and their delivery keys."""
        keys = np.zeros((len(specs), 3), dtype=np.int64)
        if not specs:
            return [], keys
        encode = self._encode or _default_encoder()
        rng = self._raw_rng
        templates: dict[int, bytes] = {}
        for kind in TICK_KINDS:
            picks = [i for i, s in enumerate(specs) if s.kind == kind]
            if picks:
                rows = frames[kind][[specs[i].row for i in picks]]
                encoded = encode(kind, rows.select(list(frame_schema(kind))))
                templates.update(zip(picks, encoded, strict=True))
        messages: list[RawMessage] = []
        for i, spec in enumerate(specs):
            frame = frames[spec.kind]
            payload = templates[i]
            if spec.reason == "random_bytes":
                body = rng.bytes(int(rng.integers(1, 64)))
                # never the magic byte of either framing K2 reads (0xC3 single-object, 0x00 Confluent)
                first = int(rng.integers(1, 255))
                value = bytes([first + (first >= 0xC3)]) + body
            elif spec.reason == "truncated":
                value = payload[: int(rng.integers(1, len(payload)))]
            else:
                value = b"\xc3\x01" + rng.bytes(8) + payload[10:]
            symbol = frame["symbol"][spec.row]
            messages.append(RawMessage(spec.kind, symbol.encode(), value, spec.reason))
            keys[i] = (frame["_pos"][spec.row], MALFORMED, spec.tie)
        order = np.lexsort(keys.T[::-1])
        return [messages[i] for i in order], keys[order]


def _default_encoder() -> Encoder:
    """K2's own wire encoder (single-object Avro), resolved when first needed."""
    from k2.schemas import encode_batch

    return lambda kind, frame: encode_batch(kind, frame)
