"""Workload validation and the query mix."""

from __future__ import annotations

import pytest

from k2.cost.errors import CostInputError
from k2.cost.inputs import SCENARIOS, Workload, parse_mix


def test_mix_is_normalised() -> None:
    assert parse_mix("window=2,bars=1,asof=1") == {"window": 0.5, "bars": 0.25, "asof": 0.25}
    assert parse_mix({"bars": 3.0}) == {"window": 0.0, "bars": 1.0, "asof": 0.0}


@pytest.mark.parametrize("mix", ["window", "window=x", "scan=1", "window=0,bars=0", "window=-1"])
def test_bad_mix_is_refused(mix: str) -> None:
    with pytest.raises(CostInputError, match="query_mix"):
        parse_mix(mix)


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"peak_msgs_per_s": 0}, "peak_msgs_per_s"),
        ({"trade_share": 1.5}, "trade_share"),
        ({"replication": 0}, "replication"),
        ({"region": "eu-west-1"}, "region"),
        ({"kafka": "confluent"}, "kafka"),
        ({"catalog": "hive"}, "catalog"),
        ({"state": "rocksdb"}, "state"),
        ({"active_hours": 25}, "active_hours"),
        ({"qps": -1}, "qps"),
        ({"peak_msgs_per_s": 1, "daily_messages": 1e9}, "peak_msgs_per_s"),
    ],
)
def test_bad_workload_is_refused(change: dict, name: str) -> None:
    with pytest.raises(CostInputError) as caught:
        SCENARIOS["asx"].with_changes(**change)
    assert caught.value.name == name and caught.value.exit_code == 2


def test_asx_scenario_is_asic_arithmetic() -> None:
    asx: Workload = SCENARIOS["asx"]
    assert asx.daily_messages == pytest.approx(2_210_328 * 10.3)
    assert asx.trade_share == pytest.approx(1 / 10.3)
    assert asx.region == "ap-southeast-2"
