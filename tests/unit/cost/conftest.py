"""A price file and benchmark results with round numbers, so every expected figure is hand-computed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k2.cost.measured import Measured
from k2.cost.prices import PriceBook

_US = {
    "ec2.c7g.xlarge": (0.1, {"vcpu": 4}),
    "ec2.m7g.large": (0.05, {"vcpu": 2}),
    "ec2.t4g.medium": (0.02, {"vcpu": 2}),
    "ebs.kafka_storage": (0.1, {}),
    "msk.kafka.m7g.large": (0.2, {}),
    "msk.storage": (0.1, {}),
    "msk.express.m7g.large": (0.4, {}),
    "msk.express.written": (0.01, {}),
    "msk.serverless.cluster": (0.75, {}),
    "msk.serverless.partition": (0.0015, {}),
    "msk.serverless.in": (0.1, {}),
    "msk.serverless.out": (0.05, {}),
    "msk.serverless.storage": (0.1, {}),
    "s3.standard": (0.02, {}),
    "s3.put": (0.005, {}),
    "s3.get": (0.0004, {}),
    "s3tables.storage": (0.03, {}),
    "glue.requests": (1.0, {"free_per_month": 1_000_000}),
    "elasticache.serverless.valkey.storage": (0.1, {}),
    "elasticache.serverless.valkey.ecpu": (0.002, {}),
    "transfer.inter_az": (0.01, {}),
    "transfer.internet_out": (0.09, {}),
}


def price_document() -> dict[str, Any]:
    items = {name: {"unit": "u", "us-east-1": value, "ap-southeast-2": None, "source": "test", **extra}
             for name, (value, extra) in _US.items()}  # fmt: skip
    items["transfer.internet_out"]["ap-southeast-2"] = 0.12  # a region's own figure: not an estimate
    return {"as_of": "2026-01-01", "uplift": {"ap-southeast-2": {"factor": 1.25}, "us-east-1": {"factor": 1.0}},
            "items": items}  # fmt: skip


@pytest.fixture
def prices() -> PriceBook:
    return PriceBook(price_document(), "test")


@pytest.fixture
def measured() -> Measured:
    return Measured(
        ingest_rows_per_cpu_s=100_000, ingest_rows_per_s=150_000, broker_msgs_per_s=200_000,
        kafka_trade_bytes=100, kafka_quote_bytes=100, parquet_trade_bytes=30, parquet_quote_bytes=40,
        redis_sequence_key_bytes=150, redis_dedup_id_bytes=100, bloom_bytes_per_id=2.0,
        query_p50_ms={"window": 2.0, "bars": 4.0, "asof": 10.0},
        query_p99_ms={"window": 5.0, "bars": 9.0, "asof": 20.0},
    )  # fmt: skip


def results_dir(tmp: Path) -> Path:
    """Benchmark result files with the figures of ``measured`` (and two ASX/simulated variants)."""
    figures = {
        "bench_ingest": {"ingest_checks_rows_per_cpu_s": 100_000, "ingest_checks_rows_per_s": 150_000},
        "bench_producer": {"raw_producer_msgs_per_s": 200_000},
        "bench_storage": {
            "kafka_trades_value_bytes": 96, "kafka_trades_key_bytes": 4,
            "kafka_quotes_value_bytes": 97, "kafka_quotes_key_bytes": 3,
            "parquet_asx_trades_bytes_per_row": 30, "parquet_sim_trades_bytes_per_row": 25,
            "parquet_asx_quotes_bytes_per_row": 35, "parquet_sim_quotes_bytes_per_row": 40,
            "redis_sequence_key_used_memory_bytes": 150, "redis_dedup_id_used_memory_bytes": 100,
            "bloom_bytes_per_id": 2.0,
        },
        "bench_query": {
            **{f"compacted_sim_{q}_warm_p50_ms": v for q, v in (("a", 2.0), ("b", 4.0), ("c", 10.0))},
            **{f"compacted_sim_{q}_warm_p99_ms": v for q, v in (("a", 5.0), ("b", 9.0), ("c", 20.0))},
        },
    }  # fmt: skip
    tmp.mkdir(parents=True, exist_ok=True)
    for name, figs in figures.items():
        (tmp / f"{name}.json").write_text(
            json.dumps({"benchmark": name, "measured_at": "t", "figures": figs})
        )
    return tmp
