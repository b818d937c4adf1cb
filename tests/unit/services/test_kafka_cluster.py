"""The KRaft cluster's configuration: node ports, replication, what each node's server.properties says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k2.config import Settings, load_settings
from k2.errors import ConfigError
from k2.services.kafka import KafkaService


def _settings(tmp_path: Path, **kafka: object) -> Settings:
    return load_settings(data_dir=tmp_path, kafka={"port": 30000, "controller_port": 30001, **kafka})


def _props(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def test_one_broker_keeps_the_single_node_defaults(tmp_path: Path) -> None:
    kafka = _settings(tmp_path).kafka
    assert (kafka.bootstrap, kafka.replicas, kafka.min_insync) == ("127.0.0.1:30000", 1, 1)


def test_three_brokers_replicate_three_ways_and_need_two_in_sync(tmp_path: Path) -> None:
    kafka = _settings(tmp_path, brokers=3).kafka
    assert kafka.node_ports == [30000, 30002, 30004]
    assert kafka.node_controller_ports == [30001, 30003, 30005]
    assert kafka.bootstrap == "127.0.0.1:30000,127.0.0.1:30002,127.0.0.1:30004"
    assert (kafka.replicas, kafka.min_insync) == (3, 2)
    assert _settings(tmp_path, brokers=5).kafka.replicas == 3  # more nodes spread the load, not copies
    assert _settings(tmp_path, brokers=2).kafka.min_insync == 1  # 2 replicas: one may be down
    explicit = _settings(tmp_path, brokers=3, replication_factor=2, min_insync_replicas=2).kafka
    assert (explicit.replicas, explicit.min_insync) == (2, 2)


@pytest.mark.parametrize(
    "kafka",
    [
        {"brokers": 3, "port": 30000, "controller_port": 30002},  # node 2's client port is a controller's
        {"brokers": 3, "port": 65532, "controller_port": 30001},  # past the last port
    ],
)
def test_overlapping_or_out_of_range_node_ports_are_refused(tmp_path: Path, kafka: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="do not overlap"):
        load_settings(data_dir=tmp_path, kafka=kafka)


def test_each_node_votes_in_one_quorum_and_keeps_writes_on_two_replicas(tmp_path: Path) -> None:
    service = KafkaService(_settings(tmp_path, brokers=3))
    configs = [_props(service._write_config(node)) for node in service.nodes]
    voters = "1@127.0.0.1:30001,2@127.0.0.1:30003,3@127.0.0.1:30005"
    for node, props in enumerate(configs, start=1):
        assert props["node.id"] == str(node)
        assert props["controller.quorum.voters"] == voters
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{30000 + 2 * (node - 1)}"
        assert props["log.dirs"] == str(tmp_path / "services" / "kafka" / f"node-{node}" / "data")
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["unclean.leader.election.enable"] == "false"


def test_the_active_controller_is_the_leader_of_the_highest_epoch(tmp_path: Path) -> None:
    service = KafkaService(_settings(tmp_path, brokers=3))
    assert service.active_controller() is None  # nothing ran yet
    for node, (leader, epoch) in {1: (1, 4), 2: (3, 5), 3: (3, 5)}.items():
        path = service.node_home(node) / "data" / "__cluster_metadata-0" / "quorum-state"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"leaderId": leader, "leaderEpoch": epoch, "votedId": -1}))
    assert service.active_controller() == 3  # node 1 was down through the election: it names the old leader
