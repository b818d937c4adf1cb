"""A single-node Apache Kafka 4.x broker in KRaft mode (combined broker and controller)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import uuid
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
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self._kafka = settings.kafka
        self.home = settings.data_dir / "services" / "kafka"
        self.jars = KafkaJars(settings.cache_dir, settings.kafka.version)
        self._proc = OwnedProcess(self.home / "kafka.pid")

    @property
    def managed(self) -> bool:
        return self._kafka.managed

    @property
    def address(self) -> str:
        return self._kafka.bootstrap

    @property
    def log_path(self) -> Path:
        return self.home / "kafka.log"

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
        pid = self._proc.pid
        if pid is None:
            state: ServiceState = "stale" if self._proc.stale else "stopped"
            detail = f"pid file {self._proc.pid_file} names a dead process" if state == "stale" else ""
            return ServiceStatus(self.name, state, self.address, version=self._kafka.version, detail=detail)
        return self._probe("running", pid)

    def _probe(self, state: str, pid: int | None = None) -> ServiceStatus:
        try:
            version = self.ping()
        except Exception as exc:
            bad = "unreachable" if state == "external" else "unhealthy"
            return ServiceStatus(self.name, bad, self.address, pid, self._kafka.version, str(exc))  # type: ignore[arg-type]
        return ServiceStatus(self.name, state, self.address, pid, version)  # type: ignore[arg-type]

    def start(self, timeout_s: float = 90.0) -> ServiceStatus:
        if not self.managed or self._proc.pid is not None:
            return self.status()
        self._proc.clear()  # a stale pid file from a crash
        busy = [
            p
            for p in (
                self._kafka.port,
                self._kafka.controller_port,
            )
            if port_in_use(p)
        ]
        if busy:
            raise ServiceStartError(
                f"port {busy[0]} is already in use by a process K2 did not start from {self.home}; "
                "stop it, or choose other ports (K2_KAFKA__PORT/__CONTROLLER_PORT)",
                service=self.name,
            )
        java = self._java()
        self.jars.ensure()
        config = self._write_config()
        self._format(java, config)
        proc = spawn(
            [java, f"-Xms{self._kafka.heap}", f"-Xmx{self._kafka.heap}", "-XX:+UseG1GC",
             f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
             "-cp", self.jars.classpath, "kafka.Kafka", str(config)],
            log_path=self.log_path, cwd=self.home,
        )  # fmt: skip
        self._proc.record(proc)

        def ready() -> bool:
            if proc.poll() is not None:
                return True
            try:
                self.ping()
                return True
            except Exception:
                return False

        if not wait_until(ready, timeout_s, 0.25) or proc.poll() is not None:
            self._proc.terminate(5)
            raise ServiceStartError(
                f"Kafka did not become ready on {self.address} within {timeout_s:.0f}s; "
                f"log tail ({self.log_path}):\n{tail(self.log_path, 25)}",
                service=self.name,
            )
        return self.status()

    def stop(self, timeout_s: float = 30.0) -> ServiceStatus:
        if self.managed:
            self._proc.terminate(timeout_s)
        return self.status()

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

    def _write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        k = self._kafka
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{k.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{k.port},CONTROLLER://127.0.0.1:{k.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{k.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            "num.partitions": str(k.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.ms": str(k.retention_ms),
        }
        config = self.home / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        (self.home / "log4j2.properties").write_text(_LOG4J)
        return config

    def _format(self, java: str, config: Path) -> None:
        """Format the storage once; the cluster id is kept so the broker's data survives restarts."""
        if (self.home / "data" / "meta.properties").exists():
            return
        cmd = [java, "-cp", self.jars.classpath, "kafka.tools.StorageTool", "format",
               f"--cluster-id={self._cluster_id()}", "-c", str(config), "--ignore-formatted"]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceStartError(
                f"formatting Kafka storage failed: {(result.stdout + result.stderr).strip()[-2000:]}",
                service=self.name,
            )
