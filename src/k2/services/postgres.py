"""A local PostgreSQL server for the Iceberg catalog, from Debian's ``postgresql`` package.

Its cluster lives in ``<data_dir>/services/postgres/data``; it listens on loopback only (no Unix
socket, whose path length a deep data directory would exceed) and requires the password K2
generates on the first start (``postgres.password_file``, mode 0600), as the local Redis does.

PostgreSQL refuses to run as root. When K2 runs as root (CI does), the cluster directory belongs
to the unprivileged ``postgres.os_user`` (Debian's package creates ``postgres``) and initdb and the
server run as that user, started directly with setuid so that the recorded pid is the server's
own; otherwise they run as K2's own user.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

from k2.config import Settings
from k2.services.base import ProcessService, ServiceStatus
from k2.services.errors import ServiceError, ServiceStartError
from k2.services.process import OwnedProcess, await_ready, port_in_use, spawn, tail, write_private

__all__ = ["PostgresService", "find_bin_dir"]

_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_INSTALL_HINT = (
    "install Debian's package (apt-get install postgresql, which `make setup` does), set "
    "K2_POSTGRES__BIN_DIR to a directory holding initdb and postgres, or point K2_LAKE__CATALOG_URI "
    "at an existing PostgreSQL server"
)


def find_bin_dir(configured: Path | None) -> Path | None:
    """Where initdb and postgres are: the configured directory, the newest Debian version, or PATH."""
    candidates: list[Path] = []
    if configured is not None:
        candidates.append(configured)
    else:
        versions = [p for p in _DEBIAN_ROOT.glob("*/bin") if p.parent.name.isdigit()]
        candidates.extend(sorted(versions, key=lambda p: int(p.parent.name), reverse=True))
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).parent)
    for directory in candidates:
        if all(os.access(directory / exe, os.X_OK) for exe in ("initdb", "postgres")):
            return directory
    return None


class PostgresService(ProcessService):
    """The catalog's PostgreSQL: local (K2 runs it) unless lake.catalog_uri names another server."""

    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        self._pg = settings.postgres
        uri = settings.lake.catalog_uri
        external = uri is not None and uri.get_secret_value().startswith(("postgresql", "postgres:"))
        self._external_uri = settings.catalog_uri if external else None
        self.home = settings.data_dir / "services" / "postgres"
        self.pgdata = self.home / "data"
        self._proc = OwnedProcess(self.home / "postgres.pid")

    @property
    def managed(self) -> bool:
        return self._external_uri is None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._pg.port}" if self.managed else "external"

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    @property
    def url(self) -> str:
        """The SQLAlchemy URI of the catalog database (the local one, or the external one)."""
        return self._external_uri or self._pg.effective_url

    def ping(self) -> str:
        version = _query(self.url, "SHOW server_version")
        return str(version).split()[0]

    def start(self, timeout_s: float = 60.0) -> ServiceStatus:
        if not self.managed or self._proc.pid is not None:
            return self.status()
        self._proc.clear()
        if port_in_use(self._pg.port):
            raise ServiceStartError(
                f"port {self._pg.port} is already in use by a process K2 did not start from {self.home}; "
                "stop it, or choose another port (K2_POSTGRES__PORT)",
                service=self.name,
            )
        bin_dir = find_bin_dir(self._pg.bin_dir)
        if bin_dir is None:
            where = self._pg.bin_dir or f"{_DEBIAN_ROOT}/*/bin or PATH"
            raise ServiceError(
                f"the PostgreSQL server programs (initdb, postgres) are not in {where}; {_INSTALL_HINT}",
                service=self.name,
            )
        user = self._os_user()
        self.home.mkdir(parents=True, exist_ok=True)
        password = self._password()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, user, password)
        self._check_version(bin_dir)
        cmd = [
            str(bin_dir / "postgres"), "-D", str(self.pgdata), "-p", str(self._pg.port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "max_connections=200", "-c", "shared_buffers=64MB",
        ]  # fmt: skip
        proc = spawn(cmd, log_path=self.log_path, cwd=self.pgdata, user=user)
        self._proc.record(proc)

        if not await_ready(proc, self._ensure_database, timeout_s, 0.2):
            self._proc.terminate(5, signal.SIGINT)
            raise ServiceStartError(
                f"PostgreSQL did not become ready on {self.address}; log tail:\n{tail(self.log_path, 20)}",
                service=self.name,
            )
        return self.status()

    def stop(self, timeout_s: float = 30.0) -> ServiceStatus:
        # SIGINT is PostgreSQL's fast shutdown: it disconnects the clients (a catalog's connection
        # pool in another process) and checkpoints; SIGTERM would wait for those clients to leave.
        if self.managed:
            self._proc.terminate(timeout_s, signal.SIGINT)
        return self.status()

    def _os_user(self) -> str | None:
        """The user the server runs as when K2 is root, None to run as K2's own user."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(self._pg.os_user)
        except KeyError as exc:
            raise ServiceError(
                f"K2 runs as root and PostgreSQL refuses to; the unprivileged user {self._pg.os_user!r} "
                "that would run it does not exist (Debian's postgresql package creates 'postgres'); "
                "create it, set K2_POSTGRES__OS_USER, or run K2 as a non-root user",
                service=self.name,
            ) from exc
        return self._pg.os_user

    def _initdb(self, bin_dir: Path, user: str | None, password: str) -> None:
        """Create the cluster: scram-sha-256 for every TCP client, the generated password for K2's user."""
        shutil.rmtree(self.pgdata, ignore_errors=True)  # a half-made cluster from an interrupted start
        self.pgdata.mkdir(mode=0o700)
        pwfile = self.home / "initdb.pw"
        write_private(pwfile, password + "\n")
        try:
            if user is not None:
                entry = pwd.getpwnam(user)
                for path in (self.pgdata, pwfile):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
                self._check_reachable(user)
            cmd = [
                str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", self._pg.user,
                f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                "--encoding=UTF8", "--no-locale", "--no-instructions",
            ]  # fmt: skip
            result = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                check=False,
                cwd=self.pgdata,
                user=user,
                extra_groups=[] if user else None,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise ServiceStartError(
                f"initdb failed (exit {result.returncode}):\n{(result.stdout + result.stderr).strip()[-2000:]}",
                service=self.name,
            )

    def _check_reachable(self, user: str) -> None:
        """The server's user must be able to walk down to its directory, or initdb fails obscurely."""
        probe = subprocess.run(["test", "-x", str(self.pgdata)], user=user, check=False, extra_groups=[])
        if probe.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise ServiceStartError(
                f"K2 runs as root, so PostgreSQL runs as {user!r}, which cannot reach {self.pgdata}: a "
                "parent directory is closed to it. Allow it through (e.g. chmod o+x on that parent), "
                "choose a data directory it can reach (K2_DATA_DIR), or run K2 as a non-root user",
                service=self.name,
            )

    def _check_version(self, bin_dir: Path) -> None:
        cluster = (self.pgdata / "PG_VERSION").read_text().strip()
        result = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
        )
        match = re.search(r"\) (\d+)", result.stdout)  # "postgres (PostgreSQL) 15.14 (Debian …)"
        server = match.group(1) if match else "?"
        if server != cluster:
            raise ServiceStartError(
                f"the cluster in {self.pgdata} was made by PostgreSQL {cluster}, but {bin_dir} holds "
                f"PostgreSQL {server}; set K2_POSTGRES__BIN_DIR to version {cluster}'s programs, or "
                "dump the catalog and remove the directory",
                service=self.name,
            )

    def _ensure_database(self) -> None:
        """Create the catalog's database on the first start (CREATE DATABASE cannot run in a transaction)."""
        admin = self._pg.effective_url.rsplit("/", 1)[0] + "/postgres"
        sql = f"SELECT 1 FROM pg_database WHERE datname = '{self._pg.database}'"
        if _query(admin, sql) is None:
            _query(admin, f'CREATE DATABASE "{self._pg.database}"', autocommit=True)

    def _password(self) -> str:
        """The local server's password: generated once, kept beside its data (0600), reused after."""
        path = self._pg.password_file or self.home / "password"
        existing = self._pg.local_password()
        if existing:
            path.chmod(0o600)
            return existing
        if (self.pgdata / "PG_VERSION").exists():
            raise ServiceStartError(
                f"the cluster in {self.pgdata} exists but its password file {path} is gone; restore the "
                "file, or remove the directory to start an empty catalog",
                service=self.name,
            )
        password = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, password + "\n")
        return password


def _query(url: str, sql: str, *, autocommit: bool = False) -> object:
    """One statement on a fresh connection (no pool left behind); returns the first column of the
    first row, None when there is none.

    Raises:
        ServiceError: the driver is not installed.
        Exception: whatever SQLAlchemy raised when the server does not answer.
    """
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    # connect_timeout is libpq's (psycopg2, psycopg); another driver waits its own default
    libpq = make_url(url).get_driver_name() in ("psycopg2", "psycopg")
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2} if libpq else {})
    except ModuleNotFoundError as exc:
        raise ServiceError(
            f"the PostgreSQL driver is not installed ({exc.name}); pip install 'k2[postgres]'",
            service="postgres",
        ) from exc
    try:
        with engine.connect() as conn:
            if autocommit:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            row = conn.execute(text(sql)).first()
            if not autocommit:
                conn.commit()
            return None if row is None else row[0]
    finally:
        engine.dispose()


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
