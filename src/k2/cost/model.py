"""The monthly bill: sizing from K2's measured figures, prices from the dated price file.

Sizing rules (each a line in docs/cost.md):

* ingest: vCPUs = peak x headroom / (rows per CPU-second, checks on); c7g.xlarge (4 vCPU), plus one
  spare instance for failover (N+1). One measured core is taken as one vCPU.
* Kafka: brokers = max(3, RF, peak x headroom x RF / (one broker's measured message rate)); disk =
  bytes a day x retention x RF. Self-managed pays inter-AZ replication; MSK does not.
* state: Redis holds (venue, symbol) keys and one day of exact dedup ids, priced as ElastiCache
  Serverless (Valkey) GB-hours; the Bloom filter lives in each ingest process's RAM (reported).
* lake: compacted Parquet bytes a day x retention on S3 Standard; PUTs per commit, GETs per query.
* catalog: Glue requests (one read + one update per commit per table, one read per refresh per query
  node per table) or Postgres on one t4g.medium.
* queries: cores = qps x mix-weighted warm p50 x headroom (one core per query), at least two nodes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from k2.cost.inputs import Workload
from k2.cost.measured import Measured
from k2.cost.prices import PriceBook, Quote

__all__ = [
    "HOURS_PER_MONTH",
    "TRADING_DAYS_PER_MONTH",
    "Bill",
    "Line",
    "estimate",
]

HOURS_PER_MONTH = 730.0
TRADING_DAYS_PER_MONTH = 21.0  # 252 a year / 12
TRADING_FRACTION = 252 / 365  # a retention in calendar days holds this share of days with data
GB = 1e9
TABLES = 2  # trades, quotes
FILES_PER_COMMIT = 16 + 3  # at most one data file per symbol bucket, + manifest, list, metadata
GETS_PER_QUERY = 4  # footer + data of one or two files (plans are cached per snapshot)
CATALOG_REFRESH_S = 1.0  # the query engine's snapshot refresh interval
CONSUMERS = 2  # the ingest pipeline and the hybrid tail readers
CROSS_AZ_SHARE = 2 / 3  # clients talk to a leader in another of three AZs this often
REDIS_BYTES_MOVED_PER_MSG = 40  # an id (32 B) + its share of the sequence commit, for ECPUs
INGEST_INSTANCE, BROKER_INSTANCE, QUERY_INSTANCE, CATALOG_INSTANCE = (
    "ec2.c7g.xlarge", "ec2.m7g.large", "ec2.m7g.large", "ec2.t4g.medium")  # fmt: skip
CATALOG_DISK_GB = 20


@dataclass(frozen=True)
class Line:
    """One line of the bill."""

    component: str
    item: str
    quantity: float
    unit: str
    unit_price: float
    monthly: float
    estimate: bool
    note: str = ""


@dataclass
class Bill:
    """A month of running one workload: lines, totals, unit costs, sizing and comparisons."""

    workload: Workload
    lines: list[Line]
    sizing: dict[str, float]
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    price_file: str = ""
    measured_sources: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(line.monthly for line in self.lines)

    def by_component(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.lines:
            out[line.component] = out.get(line.component, 0.0) + line.monthly
        return out

    @property
    def per_million_messages(self) -> float:
        return self.total / (self.sizing["messages_per_month"] / 1e6)

    @property
    def per_tb_stored(self) -> float:
        """The whole bill over the lake's size: what each TB kept costs to keep and feed."""
        tb = self.sizing["lake_stored_gb"] / 1000
        return self.total / tb if tb else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": {k: v for k, v in asdict(self.workload).items()},
            "lines": [asdict(line) for line in self.lines],
            "by_component": self.by_component(),
            "total_monthly_usd": self.total,
            "usd_per_million_messages": self.per_million_messages,
            "usd_per_tb_stored": self.per_tb_stored,
            "sizing": self.sizing,
            "comparisons": self.comparisons,
            "estimates": any(line.estimate for line in self.lines),
            "price_file": self.price_file,
            "measured": self.measured_sources,
        }


class _Pricer:
    def __init__(self, prices: PriceBook, region: str) -> None:
        self.prices, self.region = prices, region
        self.lines: list[Line] = []

    def quote(self, item: str) -> Quote:
        return self.prices.quote(item, self.region)

    def add(
        self, component: str, item: str, quantity: float, unit: str, note: str = "", per: float = 1.0
    ) -> float:
        q = self.quote(item)
        monthly = quantity * q.value / per
        self.lines.append(Line(component, item, quantity, unit, q.value, monthly, q.estimate, note))
        return monthly


def estimate(w: Workload, m: Measured, prices: PriceBook) -> Bill:
    """Size and price one month of ``w`` on K2's measured figures ``m``."""
    p = _Pricer(prices, w.region)
    msg_bytes = w.message_bytes or (
        w.trade_share * m.kafka_trade_bytes + (1 - w.trade_share) * m.kafka_quote_bytes
    )
    monthly_msgs = w.daily_messages * TRADING_DAYS_PER_MONTH
    monthly_gb = monthly_msgs * msg_bytes / GB
    capacity = w.peak_msgs_per_s * w.headroom
    s: dict[str, float] = {"messages_per_month": monthly_msgs, "message_bytes": msg_bytes,
                           "kafka_gb_per_month": monthly_gb}  # fmt: skip

    # ingest
    vcpus = capacity / m.ingest_rows_per_cpu_s
    per_node = p.prices.item(INGEST_INSTANCE)["vcpu"]
    nodes = math.ceil(vcpus / per_node) + 1
    s |= {"ingest_vcpus": vcpus, "ingest_nodes": nodes}
    p.add("ingest", INGEST_INSTANCE, nodes * HOURS_PER_MONTH, "instance-hours",
          f"{vcpus:.1f} vCPU at {capacity:,.0f} msg/s, + 1 spare (N+1)")  # fmt: skip
    window_ids = w.daily_messages  # K2's dedup window is 24 h
    s["bloom_ram_gb_per_ingest_node"] = window_ids * m.bloom_bytes_per_id / GB

    # Kafka
    kafka_disk_gb = (
        w.daily_messages * msg_bytes * w.kafka_retention_days * TRADING_FRACTION * w.replication / GB
    )
    client_az_gb = monthly_gb * (1 + CONSUMERS) * CROSS_AZ_SHARE
    s["kafka_disk_gb"] = kafka_disk_gb
    if w.kafka == "msk-serverless":
        p.add("kafka", "msk.serverless.cluster", HOURS_PER_MONTH, "cluster-hours")
        p.add("kafka", "msk.serverless.partition", w.partitions * TABLES * HOURS_PER_MONTH, "partition-hours",
              f"{w.partitions} partitions x {TABLES} topics")  # fmt: skip
        p.add("kafka", "msk.serverless.in", monthly_gb * GB / 2**30, "GiB in")
        p.add(
            "kafka",
            "msk.serverless.out",
            monthly_gb * CONSUMERS * GB / 2**30,
            "GiB out",
            f"{CONSUMERS} consumers",
        )
        p.add("kafka", "msk.serverless.storage", kafka_disk_gb / w.replication * GB / 2**30, "GiB-months",
              "one copy billed")  # fmt: skip
        s["kafka_brokers"] = 0
    else:
        brokers = max(3, w.replication, math.ceil(capacity * w.replication / m.broker_msgs_per_s))
        s["kafka_brokers"] = brokers
        managed = w.kafka == "msk"
        p.add("kafka", "msk.kafka.m7g.large" if managed else BROKER_INSTANCE, brokers * HOURS_PER_MONTH,
              "broker-hours", f"{capacity * w.replication:,.0f} replica writes/s")  # fmt: skip
        p.add("kafka", "msk.storage" if managed else "ebs.kafka_storage", kafka_disk_gb, "GB-months",
              f"{w.kafka_retention_days:g} days x RF {w.replication}")  # fmt: skip
        if not managed:
            p.add("kafka", "transfer.inter_az", monthly_gb * (w.replication - 1) * 2, "GB",
                  "replication between AZs (billed out and in)")  # fmt: skip
    if w.kafka != "msk-serverless":  # Serverless bills bytes in and out instead
        p.add("network", "transfer.inter_az", client_az_gb * 2, "GB",
              "producer and consumers to leaders in other AZs (billed out and in)")  # fmt: skip

    # sequence state and dedup
    redis_gb = (w.symbols * m.redis_sequence_key_bytes + window_ids * m.redis_dedup_id_bytes) / GB
    s["redis_gb"] = redis_gb if w.state == "redis" else 0.0
    if w.state == "redis":
        p.add("state", "elasticache.serverless.valkey.storage", redis_gb * HOURS_PER_MONTH, "GB-hours",
              f"{w.symbols:,} keys + one day of ids")  # fmt: skip
        ecpu_m = monthly_msgs * REDIS_BYTES_MOVED_PER_MSG / 1024 / 1e6
        p.add("state", "elasticache.serverless.valkey.ecpu", ecpu_m, "million ECPU", "1 ECPU per KB moved")

    # lake
    lake_bytes_day = w.daily_messages * (w.trade_share * m.parquet_trade_bytes
                                         + (1 - w.trade_share) * m.parquet_quote_bytes)  # fmt: skip
    stored_gb = lake_bytes_day * w.iceberg_retention_days * TRADING_FRACTION / GB
    commits_month = w.active_hours * 3600 / w.commit_interval_s * TRADING_DAYS_PER_MONTH * TABLES
    queries_month = w.qps * HOURS_PER_MONTH * 3600
    s |= {
        "lake_gb_per_day": lake_bytes_day / GB,
        "lake_stored_gb": stored_gb,
        "commits_per_month": commits_month,
    }
    p.add("lake", "s3.standard", stored_gb, "GB-months",
          f"{w.iceberg_retention_days:g} days of compacted Parquet (steady state)")  # fmt: skip
    p.add("lake", "s3.put", commits_month * FILES_PER_COMMIT, "requests",
          f"{FILES_PER_COMMIT} files per commit, one every {w.commit_interval_s:g} s", per=1000)  # fmt: skip
    p.add(
        "lake", "s3.get", queries_month * GETS_PER_QUERY, "requests", f"{GETS_PER_QUERY} per query", per=1000
    )

    # queries
    mix = w.query_mix
    cpu_s = sum(share * m.query_p50_ms[kind] / 1000 for kind, share in mix.items())
    q_cores = w.qps * cpu_s * w.headroom
    q_nodes = max(2, math.ceil(q_cores / p.prices.item(QUERY_INSTANCE)["vcpu"]))
    s |= {"query_cpu_s_per_query": cpu_s, "query_vcpus": q_cores, "query_nodes": q_nodes}
    p.add("query", QUERY_INSTANCE, q_nodes * HOURS_PER_MONTH, "instance-hours",
          f"{q_cores:.2f} vCPU for {w.qps:g} q/s, at least 2 for failover")  # fmt: skip

    # catalog
    if w.catalog == "glue":
        requests = commits_month * 2 + q_nodes * TABLES * HOURS_PER_MONTH * 3600 / CATALOG_REFRESH_S
        free = p.prices.item("glue.requests").get("free_per_month", 0)
        p.add("catalog", "glue.requests", max(0.0, requests - free) / 1e6, "million requests",
              f"{requests / 1e6:.1f} M requests, first {free / 1e6:g} M free")  # fmt: skip
    else:
        p.add("catalog", CATALOG_INSTANCE, HOURS_PER_MONTH, "instance-hours", "Postgres, one node")
        p.add("catalog", "ebs.kafka_storage", CATALOG_DISK_GB, "GB-months", "its disk")
    if w.egress_gb_month:
        p.add("network", "transfer.internet_out", w.egress_gb_month, "GB", "answers leaving AWS")

    bill = Bill(
        w, p.lines, s, price_file=f"{prices.origin} (as of {prices.as_of})", measured_sources=m.sources
    )
    bill.comparisons = _comparisons(bill, p, stored_gb, monthly_gb)
    return bill


def _comparisons(bill: Bill, p: _Pricer, stored_gb: float, monthly_gb: float) -> list[dict[str, Any]]:
    """Managed alternatives, priced only where list prices were found; what is unpriced is said."""
    express = (3 * HOURS_PER_MONTH * p.quote("msk.express.m7g.large").value
               + monthly_gb * p.quote("msk.express.written").value
               + stored_gb * p.quote("s3tables.storage").value)  # fmt: skip
    estimated = any(p.quote(i).estimate for i in ("msk.express.m7g.large", "s3tables.storage"))
    lake = sum(line.monthly for line in bill.lines if line.item == "s3.standard")
    return [
        {
            "alternative": "MSK Express (3 x m7g.large, not sized to the load) + MSK Data Delivery to S3 Tables",
            "monthly": express,
            "k2_monthly": bill.total,
            "estimate": estimated,
            "freshness": "5-15 minutes (default 10), no hybrid live view",
            "not_included": "the delivery channel's own charge (no list price found), Athena/engine queries",
        },
        {
            "alternative": "K2's lake on S3 Tables instead of S3 Standard (storage only)",
            "monthly": stored_gb * p.quote("s3tables.storage").value,
            "k2_monthly": lake,
            "estimate": p.quote("s3tables.storage").estimate,
            "freshness": "unchanged",
            "not_included": "S3 Tables request and maintenance charges",
        },
        {
            "alternative": "kdb+, QuestDB Enterprise, ClickHouse Cloud, Confluent Tableflow",
            "monthly": None,
            "k2_monthly": bill.total,
            "estimate": False,
            "freshness": "see docs/positioning.md",
            "not_included": "no citable list price was found for these (2026-12-06)",
        },
    ]
