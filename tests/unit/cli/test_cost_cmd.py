"""``k2 cost`` with its defaults, with every flag, as JSON, and with bad values (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from k2.cli.app import app
from tests.unit.cost.conftest import price_document, results_dir

runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(price_document()))
    return results_dir(tmp_path / "results"), prices


def test_defaults_run() -> None:
    result = runner.invoke(app, ["cost"])
    assert result.exit_code == 0, result.output
    assert "ap-southeast-2" in result.output and "per million messages" in result.output
    assert "* estimated" in result.output


def test_every_scenario_as_json() -> None:
    result = runner.invoke(app, ["cost", "--scenario", "all", "--json"])
    assert result.exit_code == 0, result.output
    bills = json.loads(result.output)
    assert [b["workload"]["name"] for b in bills] == ["asx", "us-equities", "research"]
    assert all(b["total_monthly_usd"] > 0 for b in bills)


def test_every_flag(files: tuple[Path, Path]) -> None:
    results, prices = files
    args = [
        "cost", "--scenario", "research", "--region", "us-east-1", "--kafka", "msk", "--catalog", "glue",
        "--state", "redis", "--peak-rate", "10000", "--daily-messages", "1000000", "--trade-share", "0.5",
        "--message-bytes", "100", "--kafka-retention-days", "7", "--iceberg-retention-days", "365",
        "--replication", "3", "--qps", "10", "--query-mix", "window=1,bars=1", "--headroom", "2",
        "--symbols", "1000", "--partitions", "12", "--active-hours", "6.5", "--commit-interval", "1",
        "--egress-gb", "10", "--measured", str(results), "--prices", str(prices), "--json",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (bill,) = json.loads(result.output)
    w = bill["workload"]
    assert (w["region"], w["kafka"], w["catalog"], w["state"]) == ("us-east-1", "msk", "glue", "redis")
    assert w["query_mix"] == {"window": 0.5, "bars": 0.5, "asof": 0.0}
    assert (w["commit_interval_s"], w["egress_gb_month"], w["message_bytes"]) == (1.0, 10.0, 100.0)
    items = {line["item"]: line["monthly"] for line in bill["lines"]}
    # the hand-computed case of test_model, with MSK brokers and storage, and 10 GB of egress
    assert items["msk.kafka.m7g.large"] == pytest.approx(438.0)
    assert items["transfer.internet_out"] == pytest.approx(0.9)
    assert items["s3.put"] == pytest.approx(93.366)
    assert not bill["estimates"]
    assert "results" in bill["measured"]["bench_ingest"]


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--region", "eu-west-1"), ("--kafka", "kinesis"), ("--catalog", "hive"), ("--state", "rocksdb"),
     ("--scenario", "nasdaq"), ("--query-mix", "scan=1"), ("--trade-share", "2"), ("--peak-rate", "-1")],
)  # fmt: skip
def test_bad_value_exits_2_with_a_message(flag: str, value: str) -> None:
    result = runner.invoke(app, ["cost", flag, value])
    assert result.exit_code == 2
    assert "error:" in result.output
