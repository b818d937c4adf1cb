"""A local redis-server with append-only persistence: sequence state must survive restarts.

It listens on loopback only and requires a password that K2 generates on the first start and
keeps in ``redis.password_file`` (mode 0600; the config file that holds it is 0600 too): other
local users cannot read or rewrite K2's sequence state.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import redis

from k2.config import Settings
from k2.services.base import ProcessService, ServiceStatus
from k2.services.errors import ServiceError, ServiceStartError
from k2.services.process import OwnedProcess, await_ready, port_in_use, spawn, tail, write_private

__all__ = ["RedisService"]


class RedisService(ProcessService):
    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self._redis = settings.redis
        self.home = settings.data_dir / "services" / "redis"
        self._proc = OwnedProcess(self.home / "redis.pid")

    @property
    def managed(self) -> bool:
        return self._redis.managed

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._redis.port}" if self.managed else "external"

    @property
    def log_path(self) -> Path:
        return self.home / "redis.log"

    def ping(self) -> str:
        client = redis.Redis.from_url(self._redis.effective_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
            return str(client.info("server")["redis_version"])
        finally:
            client.close()

    def start(self, timeout_s: float = 20.0) -> ServiceStatus:
        if not self.managed or self._proc.pid is not None:
            return self.status()
        self._proc.clear()
        busy = [p for p in (self._redis.port,) if port_in_use(p)]
        if busy:
            raise ServiceStartError(
                f"port {busy[0]} is already in use by a process K2 did not start from {self.home}; "
                "stop it, or choose other ports (K2_REDIS__PORT)",
                service=self.name,
            )
        server = shutil.which("redis-server") or next(
            (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if Path(p).exists()), None
        )
        if server is None:
            raise ServiceError(
                "redis-server is not installed; install it (Debian: apt-get install redis-server, "
                "which `make test` and `make demo` do) or set K2_REDIS__URL to an existing Redis",
                service=self.name,
            )
        self.home.mkdir(parents=True, exist_ok=True)
        password = self._password()
        conf = self.home / "redis.conf"
        write_private(
            conf,
            f"port {self._redis.port}\nbind 127.0.0.1\nprotected-mode yes\ndir {self.home}\n"
            "appendonly yes\nappendfsync everysec\nsave 60 1000\ndaemonize no\n"
            f"logfile {self.log_path}\nrequirepass {password}\n",
        )
        proc = spawn([server, str(conf)], log_path=self.home / "redis.stdout", cwd=self.home)
        self._proc.record(proc)

        if not await_ready(proc, self.ping, timeout_s, 0.1):
            self._proc.terminate(5)
            raise ServiceStartError(
                f"redis-server did not become ready on {self.address}; log tail:\n"
                f"{tail(self.log_path, 20)}\n{tail(self.home / 'redis.stdout', 5)}",
                service=self.name,
            )
        return self.status()

    def _password(self) -> str:
        """The local Redis password: generated once, kept beside its data (0600), reused after."""
        path = self._redis.password_file or self.home / "password"
        existing = self._redis.local_password()
        if existing:
            path.chmod(0o600)
            return existing
        password = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, password + "\n")
        return password

    def stop(self, timeout_s: float = 15.0) -> ServiceStatus:
        if self.managed:
            self._proc.terminate(timeout_s)
        return self.status()
