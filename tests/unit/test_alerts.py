"""deploy/k2-alerts.yml parses as Prometheus rules, and every metric it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from k2.observability.metrics import REGISTRY
from k2.state.metrics import state_metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "k2-alerts.yml"
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _registered() -> set[str]:
    state_metrics()  # collectors are built on first use
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + s for s in _SUFFIXES)
    return names


def test_alert_rules_parse_and_name_only_registered_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {"K2GapsOpenedFast", "K2GapPendingTooLong", "K2GapRecoveryLow"} <= {r["alert"] for r in rules}
    known = _registered()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        named = set(re.findall(r"\bk2_[a-z0-9_]+", rule["expr"]))
        assert named, rule["alert"]
        assert named <= known, f"{rule['alert']}: {sorted(named - known)} not registered"
