"""deploy/grafana/k2-dashboard.json and deploy/prometheus/prometheus.yml are well formed, and every
metric the dashboard plots is one K2 exports (tests/integration/test_dashboard.py checks the same
against a running app's /metrics, with a real pipeline's status file)."""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest

from k2.api.ingest_metrics import ingest_registry
from k2.observability.metrics import render
from k2.resilience.status import StatusFile, status_path
from tests.unit.api.test_status import DOCUMENT

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "k2-dashboard.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels


def dashboard_metrics() -> set[str]:
    """Every k2_* series the dashboard's queries name."""
    return {
        name for p in _panels() for t in p["targets"] for name in re.findall(r"\bk2_[a-z0-9_]+", t["expr"])
    }


def exported(text: str) -> set[str]:
    """Series names a Prometheus exposition offers: its families (with their suffixes) and samples."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
            names.add(family)
            names.update(family + s for s in _SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_the_dashboard_is_grafana_json_with_sane_panels() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "k2-lakehouse" and doc["schemaVersion"] >= 36
    assert [v["name"] for v in doc["templating"]["list"]] == ["datasource"]
    panels = doc["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 12
    for p in panels:
        assert p["type"] in ("stat", "timeseries"), p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
    for a, b in combinations(panels, 2):  # no two panels drawn over each other
        ga, gb = a["gridPos"], b["gridPos"]
        apart = (ga["x"] + ga["w"] <= gb["x"] or gb["x"] + gb["w"] <= ga["x"]
                 or ga["y"] + ga["h"] <= gb["y"] or gb["y"] + gb["h"] <= ga["y"])  # fmt: skip
        assert apart, (a["title"], b["title"])
    titles = " ".join(p["title"].lower() for p in panels)
    for needed in (
        "ingest rate",
        "lag",
        "commit latency",
        "freshness",
        "degradation",
        "breakers",
        "gaps",
        "dead letters",
    ):
        assert needed in titles, needed


def test_every_metric_the_dashboard_names_is_exported(tmp_path: Path) -> None:
    StatusFile(status_path(tmp_path)).write(DOCUMENT)
    text = (render() + generate_latest(ingest_registry(tmp_path))).decode()
    missing = dashboard_metrics() - exported(text)
    assert not missing, f"not exported: {sorted(missing)}"
    assert {"k2_ingest_lag", "k2_ingest_messages_total", "k2_api_requests_total"} <= dashboard_metrics()


def test_without_a_status_file_the_exporter_says_the_pipeline_is_down(tmp_path: Path) -> None:
    text = generate_latest(ingest_registry(tmp_path)).decode()
    assert "k2_ingest_up 0.0" in text and "k2_ingest_lag" not in text


def test_the_ingest_series_carry_the_status_file_values(tmp_path: Path) -> None:
    StatusFile(status_path(tmp_path)).write(DOCUMENT)
    text = generate_latest(ingest_registry(tmp_path)).decode()
    for line in (
        "k2_ingest_up 1.0",
        'k2_ingest_lag{partition="1",topic="k2.trades"} 20.0',
        "k2_ingest_messages_total 1000.0",
        "k2_ingest_commit_last_seconds 0.42",
        "k2_ingest_degradation_level 2.0",
        'k2_ingest_breaker_state{name="iceberg"} 2.0',
        'k2_ingest_gaps_recorded_total{kind="trades"} 3.0',
        "k2_ingest_dead_letters_total 4.0",
    ):
        assert line in text, line


def test_the_prometheus_config_scrapes_the_api_and_loads_the_alerts() -> None:
    doc = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert set(jobs) == {"k2-api", "k2-ingest"}  # the API, and each ingester's own endpoint (the gap alerts)
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"]
    for rules in doc["rule_files"]:
        assert (PROMETHEUS.parent / rules).resolve().is_file(), rules
