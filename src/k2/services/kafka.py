"""Apache Kafka 4.x in KRaft mode: one local broker, or a cluster of combined broker+controller nodes."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from confluent_kafka.admin import AdminClient

from k2.config import Settings
from k2.services.base import Service, ServiceState, ServiceStatus
from k2.services.errors import JavaMissingError, ServiceStartError
from k2.services.jars import KafkaJars
from k2.services.process import OwnedProcess, port_in_use, spawn, tail, wait_until

__all__ = ["KafkaService", "java_major_version"]

_LOG4J = """rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.ak.name = org.apache.kafka
logger.ak.level = WARN
logger.ready.name = kafka.server.KafkaRaftServer
logger.ready.level = INFO
"""


def java_major_version(java: str) -> int:
    """Major version of a Java runtime (8 for '1.8.0', 17 for '17.0.15')."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


class KafkaService(Service):
    """The local broker, or a KRaft cluster of ``kafka.brokers`` nodes on this machine.

    One node keeps today's layout (``services/kafka``); node i of a cluster lives in
    ``services/kafka/node-i``, with its own pid file, log and data, so a test or an operator can
    SIGKILL and restart one node while the others serve.
    """

    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self._kafka = settings.kafka
        self.home = settings.data_dir / "services" / "kafka"
        self.jars = KafkaJars(settings.cache_dir, settings.kafka.version)

    @property
    def nodes(self) -> list[int]:
        return list(range(1, self._kafka.brokers + 1))

    def node_home(self, node: int) -> Path:
        return self.home if self._kafka.brokers == 1 else self.home / f"node-{node}"

    def node_process(self, node: int) -> OwnedProcess:
        return OwnedProcess(self.node_home(node) / "kafka.pid")

    @property
    def _proc(self) -> OwnedProcess:
        return self.node_process(1)

    @property
    def managed(self) -> bool:
        return self._kafka.managed

    @property
    def address(self) -> str:
        return self._kafka.bootstrap

    @property
    def log_path(self) -> Path:
        return self.node_home(1) / "kafka.log"

    def ping(self) -> str:
        # log_level 0 keeps librdkafka from printing every refused connection while we wait.
        admin = AdminClient({"bootstrap.servers": self.address, "socket.timeout.ms": 2000, "log_level": 0})
        meta = admin.list_topics(timeout=2)
        if not meta.brokers:
            raise ConnectionError(f"no broker in metadata from {self.address}")
        return self._kafka.version if self.managed else f"cluster {meta.cluster_id}"

    def status(self) -> ServiceStatus:
        if not self.managed:
            return self._probe("external")
        pids = {node: self.node_process(node).pid for node in self.nodes}
        live = {node: pid for node, pid in pids.items() if pid is not None}
        if not live:
            stale = any(self.node_process(node).stale for node in self.nodes)
            state: ServiceState = "stale" if stale else "stopped"
            detail = "a pid file names a dead process" if stale else ""
            return ServiceStatus(self.name, state, self.address, version=self._kafka.version, detail=detail)
        status = self._probe("running", min(live.values()))
        if len(self.nodes) == 1:
            return status
        down = [n for n in self.nodes if pids[n] is None]
        state = "unhealthy" if down and status.state == "running" else status.state
        controller = self.active_controller() if status.state == "running" else None
        detail = "nodes " + " ".join(f"{n}={pids[n] or 'down'}" for n in self.nodes)
        detail += f", controller {controller}" if controller else ""
        detail += f"; {status.detail}" if status.detail else ""
        return ServiceStatus(
            self.name, state, self.address, status.pid, status.version, detail, pids, controller
        )

    def active_controller(self) -> int | None:
        """The node leading the KRaft metadata quorum, from the nodes' own ``quorum-state`` files.

        Each voter records the leader and epoch it knows of there; the highest epoch wins, so a
        node that was down and has not caught up yet cannot name a former leader.
        """
        best: tuple[int, int] | None = None
        for node in self.nodes:
            path = self.node_home(node) / "data" / "__cluster_metadata-0" / "quorum-state"
            try:
                state = json.loads(path.read_text())
                epoch, leader = int(state.get("leaderEpoch", -1)), int(state.get("leaderId", -1))
            except (OSError, ValueError, TypeError, AttributeError):
                continue
            if leader > 0 and (best is None or epoch > best[0]):
                best = (epoch, leader)
        return best[1] if best else None

    def _probe(self, state: str, pid: int | None = None) -> ServiceStatus:
        try:
            version = self.ping()
        except Exception as exc:
            bad = "unreachable" if state == "external" else "unhealthy"
            return ServiceStatus(self.name, bad, self.address, pid, self._kafka.version, str(exc))  # type: ignore[arg-type]
        return ServiceStatus(self.name, state, self.address, pid, version)  # type: ignore[arg-type]

    def start(self, timeout_s: float = 90.0) -> ServiceStatus:
        """Start every node that is not running (all of them, or one killed node of a cluster)."""
        if not self.managed:
            return self.status()
        todo = [n for n in self.nodes if self.node_process(n).pid is None]
        if not todo:
            return self.status()
        java = self._java()
        self.jars.ensure()
        started: dict[int, subprocess.Popen[bytes]] = {}
        for node in todo:
            self._check_ports(node)
            started[node] = self._start_node(java, node)

        def ready() -> bool:
            if any(proc.poll() is not None for proc in started.values()):
                return True
            try:
                return all(node in self._registered(node) for node in started)
            except Exception:
                return False

        if not wait_until(ready, timeout_s, 0.25) or any(p.poll() is not None for p in started.values()):
            for node in started:
                self.node_process(node).terminate(5)
            logs = "\n".join(
                f"log tail of node {n} ({self.node_home(n) / 'kafka.log'}):\n{tail(self.node_home(n) / 'kafka.log', 25)}"
                for n in started
            )
            raise ServiceStartError(
                f"Kafka did not become ready on {self.address} within {timeout_s:.0f}s; {logs}",
                service=self.name,
            )
        return self.status()

    def _registered(self, node: int) -> set[int]:
        """Brokers in the metadata that ``node`` itself serves: it answers, and knows it is registered
        (the others' metadata may still list a node killed seconds ago)."""
        address = f"127.0.0.1:{self._kafka.node_ports[node - 1]}"
        admin = AdminClient({"bootstrap.servers": address, "socket.timeout.ms": 2000, "log_level": 0})
        return set(admin.list_topics(timeout=2).brokers)

    def _check_ports(self, node: int) -> None:
        i = node - 1
        ports = (self._kafka.node_ports[i], self._kafka.node_controller_ports[i])
        busy = [p for p in ports if port_in_use(p)]
        if busy:
            raise ServiceStartError(
                f"port {busy[0]} is already in use by a process K2 did not start from {self.node_home(node)}; "
                "stop it, or choose other ports (K2_KAFKA__PORT/__CONTROLLER_PORT)",
                service=self.name,
            )

    def _start_node(self, java: str, node: int) -> subprocess.Popen[bytes]:
        home = self.node_home(node)
        process = self.node_process(node)
        process.clear()  # a stale pid file from a crash
        config = self._write_config(node)
        self._format(java, config, home)
        proc = spawn(
            [java, f"-Xms{self._kafka.heap}", f"-Xmx{self._kafka.heap}", "-XX:+UseG1GC",
             f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
             "-cp", self.jars.classpath, "kafka.Kafka", str(config)],
            log_path=home / "kafka.log", cwd=home,
        )  # fmt: skip
        process.record(proc)
        return proc

    def stop(self, timeout_s: float = 30.0) -> ServiceStatus:
        if self.managed:
            # every node this data directory ever ran, also those of a cluster size no longer configured
            # all at once: the last controller of a quorum cannot shut down cleanly alone
            files = [self.home / "kafka.pid", *sorted(self.home.glob("node-*/kafka.pid"))]
            with ThreadPoolExecutor(len(files)) as pool:
                list(pool.map(lambda f: OwnedProcess(f).terminate(timeout_s), files))
        return self.status()

    def kill_node(self, node: int) -> int | None:
        """SIGKILL one node (tests and chaos runs); returns its pid, None if it was not running."""
        record = self.node_process(node)
        pid = record.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: record.pid is None, 10.0, 0.05)
        return pid

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise JavaMissingError(
                "Kafka needs a Java 17+ runtime and none is on PATH; install one "
                "(Debian: apt-get install openjdk-17-jre-headless) or set K2_KAFKA__BOOTSTRAP_SERVERS "
                "to an existing cluster",
                service=self.name,
            )
        major = java_major_version(java)
        if major < 17:
            raise JavaMissingError(f"Kafka 4 needs Java 17+, found Java {major} at {java}", service=self.name)
        return java

    def _cluster_id(self) -> str:
        path = self.home / "cluster.id"
        if not path.exists():
            # Like Kafka's own Uuid.randomUuid: never starting with '-', which CLIs read as an option.
            raw = "-"
            while raw.startswith("-"):
                raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            path.write_text(raw)
        return path.read_text().strip()

    def _write_config(self, node: int) -> Path:
        home = self.node_home(node)
        home.mkdir(parents=True, exist_ok=True)
        k = self._kafka
        i = node - 1
        voters = ",".join(f"{n + 1}@127.0.0.1:{p}" for n, p in enumerate(k.node_controller_ports))
        replicas, isr = str(k.replicas), str(k.min_insync)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{k.node_ports[i]},CONTROLLER://127.0.0.1:{k.node_controller_ports[i]}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{k.node_ports[i]}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(home / "data"),
            "num.partitions": str(k.partitions),
            "default.replication.factor": replicas,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": isr,
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            # a replica that fell behind while its node was down must not become leader: no lost writes
            "unclean.leader.election.enable": "false",
            "log.retention.ms": str(k.retention_ms),
        }
        config = home / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        (home / "log4j2.properties").write_text(_LOG4J)
        return config

    def _format(self, java: str, config: Path, home: Path) -> None:
        """Format the storage once; the cluster id is kept so the broker's data survives restarts."""
        if (home / "data" / "meta.properties").exists():
            return
        cmd = [java, "-cp", self.jars.classpath, "kafka.tools.StorageTool", "format",
               f"--cluster-id={self._cluster_id()}", "-c", str(config), "--ignore-formatted"]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceStartError(
                f"formatting Kafka storage failed: {(result.stdout + result.stderr).strip()[-2000:]}",
                service=self.name,
            )
