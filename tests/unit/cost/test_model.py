"""The bill against figures worked out by hand (tests/unit/cost/conftest.py has the inputs)."""

from __future__ import annotations

import pytest

from k2.cost.inputs import Workload
from k2.cost.measured import Measured
from k2.cost.model import estimate
from k2.cost.prices import PriceBook

# 1 M messages a trading day (21 a month), 100 B each: 2.1 GB a month through Kafka.
BASE = Workload(
    name="hand", peak_msgs_per_s=10_000, daily_messages=1_000_000, trade_share=0.5,
    kafka_retention_days=7, iceberg_retention_days=365, replication=3, qps=10,
    query_mix={"window": 0.5, "bars": 0.5}, region="us-east-1", kafka="self-managed", catalog="glue",
    state="redis", headroom=2.0, symbols=1_000, partitions=12, active_hours=6.5,
)  # fmt: skip


def _monthly(bill, item: str, component: str | None = None) -> float:
    return sum(
        x.monthly for x in bill.lines if x.item == item and (component is None or x.component == component)
    )


def test_self_managed_glue_redis_by_hand(measured: Measured, prices: PriceBook) -> None:
    bill = estimate(BASE, measured, prices)
    # ingest: 20,000 msg/s / 100,000 per CPU-s = 0.2 vCPU -> one 4-vCPU node + 1 spare = 1,460 h x $0.1
    assert bill.sizing["ingest_nodes"] == 2
    assert _monthly(bill, "ec2.c7g.xlarge") == pytest.approx(146.0)
    # brokers: max(3, RF 3, 60,000 / 200,000) = 3 -> 2,190 h x $0.05; query: 2 nodes x 730 h x $0.05
    assert bill.sizing["kafka_brokers"] == 3
    assert _monthly(bill, "ec2.m7g.large", "kafka") == pytest.approx(109.5)
    assert _monthly(bill, "ec2.m7g.large", "query") == pytest.approx(73.0)
    # Kafka disk: 0.1 GB a day x 7 days x 252/365 x RF 3 = 1.449863 GB x $0.1
    assert bill.sizing["kafka_disk_gb"] == pytest.approx(1.449863, rel=1e-6)
    assert _monthly(bill, "ebs.kafka_storage") == pytest.approx(0.1449863, rel=1e-6)
    # replication: 2.1 GB x 2 copies x 2 sides x $0.01; clients: 2.1 x 3 x 2/3 x 2 sides x $0.01
    assert _monthly(bill, "transfer.inter_az", "kafka") == pytest.approx(0.084)
    assert _monthly(bill, "transfer.inter_az", "network") == pytest.approx(0.084)
    # Redis: (1,000 x 150 B + 1 M x 100 B) = 0.10015 GB x 730 h x $0.1; ECPU: 21 M x 40 B / 1 KiB
    assert _monthly(bill, "elasticache.serverless.valkey.storage") == pytest.approx(7.31095)
    assert _monthly(bill, "elasticache.serverless.valkey.ecpu") == pytest.approx(0.8203125 * 0.002)
    # lake: 1 M x (0.5 x 30 + 0.5 x 40) = 35 MB a day x 252 days kept = 8.82 GB x $0.02
    assert bill.sizing["lake_stored_gb"] == pytest.approx(8.82)
    assert _monthly(bill, "s3.standard") == pytest.approx(0.1764)
    # PUTs: 6.5 h x 3,600 commits x 21 days x 2 tables = 982,800 commits x 19 files, $0.005 per 1,000
    assert _monthly(bill, "s3.put") == pytest.approx(93.366)
    # GETs: 10 q/s x 730 h x 3,600 s x 4, $0.0004 per 1,000
    assert _monthly(bill, "s3.get") == pytest.approx(42.048)
    # Glue: 982,800 x 2 + 2 nodes x 2 tables x 2,628,000 s = 12,477,600, less 1 M free, $1 per M
    assert _monthly(bill, "glue.requests") == pytest.approx(11.4776)
    assert bill.total == pytest.approx(483.193576925)
    assert bill.per_million_messages == pytest.approx(483.193576925 / 21)
    assert bill.per_tb_stored == pytest.approx(483.193576925 / 0.00882)
    assert not bill.to_dict()["estimates"]


def test_query_nodes_follow_measured_latency(measured: Measured, prices: PriceBook) -> None:
    # 1,000 q/s x (0.5 x 2 ms + 0.5 x 4 ms) x 2 = 6 vCPU -> 3 nodes of 2 vCPU
    bill = estimate(BASE.with_changes(qps=1_000), measured, prices)
    assert bill.sizing["query_vcpus"] == pytest.approx(6.0)
    assert bill.sizing["query_nodes"] == 3


def test_faster_ingest_needs_fewer_nodes(measured: Measured, prices: PriceBook) -> None:
    heavy = BASE.with_changes(peak_msgs_per_s=1_000_000)  # 2 M msg/s of capacity
    slow = estimate(heavy, measured, prices).sizing["ingest_nodes"]  # 20 vCPU -> 5 + 1
    from dataclasses import replace

    fast = estimate(heavy, replace(measured, ingest_rows_per_cpu_s=200_000), prices).sizing["ingest_nodes"]
    assert (slow, fast) == (6, 4)  # 10 vCPU -> 3 + 1


def test_msk_serverless_by_hand(measured: Measured, prices: PriceBook) -> None:
    bill = estimate(BASE.with_changes(kafka="msk-serverless"), measured, prices)
    kafka = {x.item: x.monthly for x in bill.lines if x.component == "kafka"}
    gib = 2.1e9 / 2**30
    assert kafka["msk.serverless.cluster"] == pytest.approx(547.5)
    assert kafka["msk.serverless.partition"] == pytest.approx(12 * 2 * 730 * 0.0015)
    assert kafka["msk.serverless.in"] == pytest.approx(gib * 0.1)
    assert kafka["msk.serverless.out"] == pytest.approx(gib * 2 * 0.05)
    assert kafka["msk.serverless.storage"] == pytest.approx(1.449863 / 3 * 1e9 / 2**30 * 0.1, rel=1e-6)
    assert not any(x.item == "transfer.inter_az" for x in bill.lines)


def test_msk_provisioned_has_no_replication_transfer(measured: Measured, prices: PriceBook) -> None:
    bill = estimate(BASE.with_changes(kafka="msk"), measured, prices)
    assert _monthly(bill, "msk.kafka.m7g.large") == pytest.approx(3 * 730 * 0.2)
    assert _monthly(bill, "msk.storage") == pytest.approx(0.1449863, rel=1e-6)
    assert _monthly(bill, "transfer.inter_az", "kafka") == 0


def test_embedded_state_and_postgres_catalog(measured: Measured, prices: PriceBook) -> None:
    bill = estimate(BASE.with_changes(state="embedded", catalog="postgres"), measured, prices)
    assert not any(x.component == "state" for x in bill.lines)
    assert _monthly(bill, "ec2.t4g.medium") == pytest.approx(730 * 0.02)
    assert _monthly(bill, "ebs.kafka_storage", "catalog") == pytest.approx(20 * 0.1)


def test_sydney_prices_are_marked_estimates(measured: Measured, prices: PriceBook) -> None:
    bill = estimate(BASE.with_changes(region="ap-southeast-2", egress_gb_month=100), measured, prices)
    ingest = next(x for x in bill.lines if x.item == "ec2.c7g.xlarge")
    egress = next(x for x in bill.lines if x.item == "transfer.internet_out")
    assert (ingest.unit_price, ingest.estimate) == (pytest.approx(0.125), True)
    assert (egress.monthly, egress.estimate) == (pytest.approx(12.0), False)  # Sydney's own figure
    assert bill.to_dict()["estimates"]


def test_commit_interval_drives_puts(measured: Measured, prices: PriceBook) -> None:
    bill = estimate(BASE.with_changes(commit_interval_s=10.0), measured, prices)
    assert _monthly(bill, "s3.put") == pytest.approx(9.3366)


def test_comparisons_price_what_is_known(measured: Measured, prices: PriceBook) -> None:
    bill = estimate(BASE, measured, prices)
    express, tables, unpriced = bill.comparisons
    # 3 x 730 h x $0.4 + 2.1 GB x $0.01 + 8.82 GB x $0.03
    assert express["monthly"] == pytest.approx(876 + 0.021 + 0.2646)
    assert tables["monthly"] == pytest.approx(8.82 * 0.03)
    assert unpriced["monthly"] is None
