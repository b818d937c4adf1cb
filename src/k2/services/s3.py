"""A local S3 server: SeaweedFS (``weed server -s3``), for a warehouse at ``s3://bucket/...``.

One process runs SeaweedFS's master, volume server, filer and S3 gateway, all on loopback, with
their data under ``<data_dir>/services/s3``. The S3 API listens on ``s3.port``; the internal
servers take the next seven ports. Access needs the key pair from the configuration; when no secret
is configured K2 generates one on the first start (mode 0600, ``s3.secret_file``), as it does
the local Redis password. Telemetry, the Iceberg REST and Lance endpoints are switched off: K2
needs the S3 API only, and nothing should leave the machine.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from k2.config import Settings
from k2.observability.logging import get_logger
from k2.services.base import ProcessService, ServiceStatus
from k2.services.errors import ServiceStartError
from k2.services.process import OwnedProcess, await_ready, port_in_use, spawn, tail, wait_until, write_private
from k2.services.weed import WeedBinary

__all__ = ["S3Service", "s3_filesystem"]

log = get_logger(__name__)
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def s3_filesystem(
    endpoint: str, region: str, access_key: str, secret: str | None, *, create_buckets: bool = False
) -> Any:
    """A pyarrow S3 filesystem for one endpoint, with short timeouts (a probe must not hang)."""
    from pyarrow import fs as pafs

    keys = {"access_key": access_key, "secret_key": secret} if secret is not None else {}
    return pafs.S3FileSystem(
        endpoint_override=endpoint, region=region, connect_timeout=2, request_timeout=5,
        allow_bucket_creation=create_buckets, **keys,
    )  # fmt: skip


class S3Service(ProcessService):
    name = "s3"

    def __init__(self, settings: Settings) -> None:
        self._s3 = settings.s3
        self._warehouse = settings.warehouse
        self.home = settings.data_dir / "services" / "s3"
        self.binary = WeedBinary(settings.cache_dir, settings.s3.version)
        self._proc = OwnedProcess(self.home / "weed.pid")

    @property
    def managed(self) -> bool:
        return self._s3.managed

    @property
    def address(self) -> str:
        return self._s3.effective_endpoint if self.managed else "external"

    @property
    def log_path(self) -> Path:
        return self.home / "weed.log"

    @property
    def bucket(self) -> str | None:
        """The warehouse's bucket, when the warehouse is on S3."""
        uri = urlparse(self._warehouse)
        return uri.netloc or None if uri.scheme in ("s3", "s3a", "s3n") else None

    def _filesystem(self, *, create_buckets: bool = False) -> Any:
        s3 = self._s3
        return s3_filesystem(
            s3.effective_endpoint, s3.region, s3.access_key_id, s3.secret(), create_buckets=create_buckets
        )

    def _detail(self) -> str:
        return f"bucket {self.bucket}" if self.bucket else ""

    def ping(self) -> str:
        """List the buckets: a signed request, so it proves the credentials too."""
        from pyarrow import fs as pafs

        self._filesystem().get_file_info(pafs.FileSelector("", recursive=False))
        return f"SeaweedFS {self._s3.version}" if self.managed else "S3"

    def start(self, timeout_s: float = 60.0) -> ServiceStatus:
        """Build SeaweedFS if needed, start it, create the warehouse's bucket, wait until it takes data.

        Raises:
            S3BuildError: the binary could not be built.
            ServiceStartError: a port is taken, or the server did not answer in time.
        """
        if not self.managed:
            return self.status()
        if self._proc.pid is None:
            self._launch(timeout_s)
        self._ensure_bucket(timeout_s)  # also when running: the warehouse may name a new bucket
        return self.status()

    def _launch(self, timeout_s: float) -> None:
        self._proc.clear()
        busy = [p for p in self._s3.ports if port_in_use(p)]
        if busy:
            raise ServiceStartError(
                f"port {busy[0]} is already in use by a process K2 did not start from {self.home}; the local "
                f"S3 server needs ports {self._s3.port}-{self._s3.port + 7} (K2_S3__PORT)",
                service=self.name,
            )
        self.binary.ensure(say=lambda message: log.info(message, service=self.name))
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "data").mkdir(exist_ok=True)
        config = self.home / "s3.json"
        identity = {
            "name": "k2",
            "credentials": [{"accessKey": self._s3.access_key_id, "secretKey": self._secret()}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        write_private(config, json.dumps({"identities": [identity]}))
        s3, master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc = self._s3.ports
        cmd = [
            str(self.binary.path), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={self.home / 'data'}", "-volume.max=0", "-master.volumeSizeLimitMB=256",
            "-master.telemetry=false", f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.home / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={config}", f"-s3.localSocket={self.home / 's3.sock'}",
        ]  # fmt: skip
        # SeaweedFS adds an admin identity for AWS_* credentials in its environment: not the user's.
        env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": ""}
        proc = spawn(cmd, log_path=self.log_path, cwd=self.home, env=env)
        self._proc.record(proc)

        if not await_ready(proc, self.ping, timeout_s, 0.25):
            self._proc.terminate(5)
            raise ServiceStartError(
                f"SeaweedFS did not answer S3 requests on {self.address} within {timeout_s:.0f}s; "
                f"log tail:\n{tail(self.log_path, 20)}",
                service=self.name,
            )

    def _ensure_bucket(self, timeout_s: float) -> None:
        """Create the warehouse's bucket and wait until an object written there reads back.

        A signed ListBuckets answers before SeaweedFS is ready for data: its filer joins the
        master and its lock ring forms a few seconds later, and after a restart the gateway
        reconnects to the master for 10 s or more, while a read blocks. So readiness is a probe
        object written, read and deleted, each try bounded by the client's short timeouts.

        Raises:
            ServiceStartError: the bucket could not be created, or the probe did not read back in time.
        """
        bucket = self.bucket
        if bucket is None:
            return
        if not _BUCKET_NAME.fullmatch(bucket):  # S3 would refuse it on every retry: say so at once
            raise ServiceStartError(
                f"{bucket!r} is not a valid S3 bucket name (3-63 lower-case letters, digits, dots and "
                "hyphens, starting and ending with a letter or digit); change K2_LAKE__WAREHOUSE",
                service=self.name,
            )
        fs = self._filesystem(create_buckets=True)
        probe, payload = f"{bucket}/.k2-probe-{secrets.token_hex(4)}", secrets.token_bytes(64)
        errors: list[str] = []

        def round_trip() -> bool:
            try:
                fs.create_dir(bucket)
                with fs.open_output_stream(probe) as out:
                    out.write(payload)
                with fs.open_input_stream(probe) as stream:
                    echoed = stream.read()
                fs.delete_file(probe)
                return bool(echoed == payload)
            except OSError as exc:
                errors.append(str(exc))
                return False

        if not wait_until(round_trip, timeout_s, 0.5):
            raise ServiceStartError(
                f"bucket {bucket} on {self.address} did not take a write and read it back within "
                f"{timeout_s:.0f}s: {errors[-1] if errors else 'the object read back differed'}; "
                f"log tail:\n{tail(self.log_path, 10)}",
                service=self.name,
            )

    def _secret(self) -> str:
        """The configured secret, or the local one: generated once, kept beside the data (0600)."""
        existing = self._s3.secret()
        if existing:
            return existing
        path = self._s3.secret_file or self.home / "secret"
        secret = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, secret + "\n")
        return secret

    def stop(self, timeout_s: float = 15.0) -> ServiceStatus:
        """SIGTERM, then SIGKILL after at most 5 s.

        SeaweedFS's own shutdown takes about 30 s here (its servers wait on one another). Every
        write it acknowledged is already in its files (the page cache survives the process), so
        cutting the wait short loses nothing K2 committed.
        """
        if self.managed and self._proc.terminate(min(timeout_s, 5.0)):
            self._remove_grpc_sockets()
        return self.status()

    def _remove_grpc_sockets(self) -> None:
        """``weed server`` puts its gRPC sockets in /tmp, named by port, whatever the flags; a
        killed server leaves them behind. Removed once the process that owned them is gone."""
        _, master_grpc, _, volume_grpc, _, filer_grpc, s3_grpc = self._s3.ports[1:]
        for name, port in (
            ("master", master_grpc),
            ("volume", volume_grpc),
            ("filer", filer_grpc),
            ("s3", s3_grpc),
        ):
            path = Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
            if path.is_socket():
                path.unlink(missing_ok=True)
