"""What a deployment must carry (the workload) and how it is deployed, with three worked scenarios.

Every scenario figure is either cited (in ``source``) or marked as an assumption; each can be
overridden from the command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from k2.cost.errors import CostInputError
from k2.cost.prices import REGIONS, Region

__all__ = [
    "CATALOGS",
    "KAFKA_PROFILES",
    "QUERY_KINDS",
    "SCENARIOS",
    "STATE_STORES",
    "Catalog",
    "KafkaProfile",
    "StateStore",
    "Workload",
    "parse_mix",
]

KafkaProfile = Literal["self-managed", "msk", "msk-serverless"]
Catalog = Literal["glue", "postgres"]
StateStore = Literal["redis", "embedded"]
KAFKA_PROFILES: tuple[KafkaProfile, ...] = ("self-managed", "msk", "msk-serverless")
CATALOGS: tuple[Catalog, ...] = ("glue", "postgres")
STATE_STORES: tuple[StateStore, ...] = ("redis", "embedded")
QUERY_KINDS = ("window", "bars", "asof")


@dataclass(frozen=True)
class Workload:
    """One deployment's load and shape. Days are calendar days; messages arrive on trading days."""

    name: str
    peak_msgs_per_s: float
    daily_messages: float  # per trading day
    trade_share: float  # the rest are quotes / order events
    kafka_retention_days: float = 7.0
    iceberg_retention_days: float = 365.0
    replication: int = 3
    qps: float = 10.0
    query_mix: dict[str, float] = field(default_factory=lambda: {"window": 0.5, "bars": 0.4, "asof": 0.1})
    region: Region = "ap-southeast-2"
    kafka: KafkaProfile = "self-managed"
    catalog: Catalog = "glue"
    state: StateStore = "redis"
    headroom: float = 2.0  # capacity / stated peak: 2.0 = 50 % utilisation at the peak
    symbols: int = 5_000  # sequence keys (exchange, symbol) live at once
    partitions: int = 12  # Kafka partitions of K2's topics (MSK Serverless bills per partition)
    active_hours: float = 6.5  # hours a trading day the feed is live (commits happen then)
    commit_interval_s: float = 1.0  # K2's default (K2_LAKE__COMMIT_INTERVAL_S); drives S3 PUTs
    message_bytes: float | None = None  # None: K2's measured Avro size for the trade/quote mix
    egress_gb_month: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive = {"peak_msgs_per_s": self.peak_msgs_per_s, "daily_messages": self.daily_messages,
                    "headroom": self.headroom, "active_hours": self.active_hours,
                    "commit_interval_s": self.commit_interval_s}  # fmt: skip
        for name, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise CostInputError(name, f"must be a positive number, not {value}")
        for name, value in {"kafka_retention_days": self.kafka_retention_days,
                            "iceberg_retention_days": self.iceberg_retention_days, "qps": self.qps,
                            "egress_gb_month": self.egress_gb_month}.items():  # fmt: skip
            if not (value >= 0 and math.isfinite(value)):
                raise CostInputError(name, f"must be zero or more, not {value}")
        if not 0 <= self.trade_share <= 1:
            raise CostInputError("trade_share", f"must be between 0 and 1, not {self.trade_share}")
        if self.replication < 1:
            raise CostInputError("replication", f"must be at least 1, not {self.replication}")
        if self.symbols < 1 or self.partitions < 1:
            raise CostInputError("symbols/partitions", "must be at least 1")
        if self.active_hours > 24:
            raise CostInputError("active_hours", f"a day has 24 hours, not {self.active_hours}")
        if self.message_bytes is not None and not self.message_bytes > 0:
            raise CostInputError("message_bytes", f"must be positive, not {self.message_bytes}")
        if self.peak_msgs_per_s * self.active_hours * 3600 < self.daily_messages:
            raise CostInputError(
                "peak_msgs_per_s",
                f"{self.peak_msgs_per_s:,.0f}/s over {self.active_hours} h cannot carry "
                f"{self.daily_messages:,.0f} messages a day: raise the peak or the active hours",
            )
        for option, choice in (("region", self.region), ("kafka", self.kafka), ("catalog", self.catalog),
                            ("state", self.state)):  # fmt: skip
            allowed = {
                "region": REGIONS,
                "kafka": KAFKA_PROFILES,
                "catalog": CATALOGS,
                "state": STATE_STORES,
            }[option]
            if choice not in allowed:
                raise CostInputError(option, f"{choice!r} is not one of {', '.join(allowed)}")
        parse_mix(self.query_mix)

    def with_changes(self, **changes: Any) -> Workload:
        """A copy with the given fields replaced (None values are ignored), validated again."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def parse_mix(mix: str | dict[str, float]) -> dict[str, float]:
    """A query mix normalised to shares that sum to 1: ``"window=0.5,bars=0.4,asof=0.1"``.

    Raises:
        CostInputError: an unknown query kind, a negative or non-numeric weight, or all zero.
    """
    if isinstance(mix, str):
        pairs: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in mix.split(","))):
            kind, sep, weight = part.partition("=")
            try:
                pairs[kind.strip()] = float(weight) if sep else float("nan")
            except ValueError:
                raise CostInputError("query_mix", f"{part!r} is not KIND=WEIGHT") from None
        mix = pairs
    unknown = set(mix) - set(QUERY_KINDS)
    if unknown:
        raise CostInputError("query_mix", f"unknown kind(s) {sorted(unknown)}; use {', '.join(QUERY_KINDS)}")
    if any(not (w >= 0 and math.isfinite(w)) for w in mix.values()):
        raise CostInputError("query_mix", "weights must be numbers >= 0 (KIND=WEIGHT)")
    total = sum(mix.values())
    if total <= 0:
        raise CostInputError("query_mix", "at least one weight must be above zero")
    return {k: mix.get(k, 0.0) / total for k in QUERY_KINDS}


_ASX_TRADES = 2_210_328  # trades a day, all venues, Jun-2020 quarter (ASIC)
_ASX_ORDERS_PER_TRADE = 9.3  # order-to-trade ratio, Jun-2025 quarter (ASIC)

SCENARIOS: dict[str, Workload] = {
    "asx": Workload(
        name="asx",
        daily_messages=_ASX_TRADES * (1 + _ASX_ORDERS_PER_TRADE),
        trade_share=1 / (1 + _ASX_ORDERS_PER_TRADE),
        peak_msgs_per_s=20_000,
        symbols=5_000,
        kafka_retention_days=7,
        iceberg_retention_days=7 * 365,
        qps=20,
        active_hours=6.25,
        sources={
            "daily_messages": "ASIC equity market data, quarter ending June 2020: 2,210,328 trades a day across "
            "venues; x (1 + 9.3), the order-to-trade ratio of the June 2025 quarter",
            "peak_msgs_per_s": "assumption: about 19x the day's mean rate (1,012/s over 6.25 h), for the "
            "opening and closing auctions; no citable peak rate was found",
            "active_hours": "ASX normal trading 10:00-16:00 plus the auctions: assumption",
            "iceberg_retention_days": "assumption: 7 years, a common record-keeping horizon",
            "symbols": "assumption: an upper bound on (venue, symbol) keys",
        },
    ),
    "us-equities": Workload(
        name="us-equities",
        peak_msgs_per_s=1_000_000,
        daily_messages=1_000_000 * 0.1 * 6.5 * 3600,
        trade_share=0.05,
        symbols=12_000 * 16,
        partitions=64,
        kafka_retention_days=3,
        iceberg_retention_days=365,
        qps=50,
        active_hours=6.5,
        sources={
            "peak_msgs_per_s": "CQS (consolidated quotes, Tapes A and B) capacity guideline of 1,000,000 quotes/s "
            "from 2011-07-05 (nanex.net/RateResearch/CQSLines_070511)",
            "daily_messages": "assumption: a mean of 10 % of that peak over 6.5 h (2.34 bn); no citable daily "
            "count was found",
            "trade_share": "assumption: 5 % trades",
            "symbols": "assumption: 12,000 symbols x 16 venues",
        },
    ),
    "research": Workload(
        name="research",
        peak_msgs_per_s=2_000,
        daily_messages=_ASX_TRADES,
        trade_share=1.0,
        symbols=5_000,
        partitions=4,
        kafka_retention_days=1,
        iceberg_retention_days=10 * 365,
        qps=2,
        kafka="msk-serverless",
        state="embedded",
        catalog="postgres",
        active_hours=6.25,
        sources={
            "daily_messages": "ASIC June 2020 quarter: 2,210,328 trades a day (trades only, no order book)",
            "peak_msgs_per_s": "assumption",
            "iceberg_retention_days": "assumption: 10 years of history for research",
        },
    ),
}
