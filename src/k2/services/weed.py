"""The SeaweedFS server binary (``weed``), built once from its Go module and cached.

K2 names no download host: ``go mod download`` fetches ``github.com/seaweedfs/seaweedfs`` at the
pinned version through the Go module proxy (``GOPROXY``, the user's setting), which checks it
against the checksum database, and ``go build`` compiles the ``weed`` command inside the
downloaded module. (``go install module@version`` would be shorter, but it refuses modules whose
go.mod has ``replace`` directives, and SeaweedFS's has one.) The binary lands in
``<cache_dir>/seaweedfs-<version>/weed``, shared by every data directory, like the Kafka jars.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from k2.services.errors import S3BuildError

__all__ = ["SEAWEEDFS_MODULE", "WeedBinary", "find_go"]

SEAWEEDFS_MODULE = "github.com/seaweedfs/seaweedfs"
_GO_FALLBACKS = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")


def find_go() -> str | None:
    """The ``go`` command: on PATH, or where the official and Debian installs put it."""
    return shutil.which("go") or next((p for p in _GO_FALLBACKS if Path(p).is_file()), None)


class WeedBinary:
    """The ``weed`` binary of one SeaweedFS module version under K2's cache."""

    def __init__(self, cache_dir: Path, version: str) -> None:
        self.version = version
        self.root = cache_dir / f"seaweedfs-{version}"
        self.path = self.root / "weed"
        self.build_log = self.root.with_name(self.root.name + ".build.log")

    def cached(self) -> bool:
        return self.path.is_file() and os.access(self.path, os.X_OK)

    def ensure(self, say: Callable[[str], None] | None = None) -> bool:
        """Build the binary unless cached. Returns True when it built one.

        ``say`` hears each step (the first build takes minutes: the CLI shows it).

        Raises:
            S3BuildError: Go is missing, or the download or the build failed (the message holds
                the tail of the build log).
        """
        if self.cached():
            return False
        go = find_go()
        if go is None:
            raise S3BuildError(
                "Go is needed once to build the local S3 server (SeaweedFS) from its Go module; install "
                "it (`make setup` does: Debian's golang-go) or point K2_S3__ENDPOINT at an existing S3",
                service="s3",
            )
        notify = say or (lambda _message: None)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        # GOTOOLCHAIN=auto: a Go older than SeaweedFS's go.mod asks for fetches that toolchain
        # through the module proxy (Debian's go.env says "local", which would refuse).
        env = {**os.environ, "GOFLAGS": "-mod=readonly", "GOWORK": "off",
               "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "auto")}  # fmt: skip
        notify(f"downloading {SEAWEEDFS_MODULE}@{self.version} through the Go module proxy")
        module = f"{SEAWEEDFS_MODULE}@{self.version}"
        listed = self._run([go, "mod", "download", "-json", module], cwd=self.root.parent, env=env)
        try:
            source = Path(json.loads(listed)["Dir"])
        except (ValueError, KeyError) as exc:
            raise S3BuildError(
                f"`go mod download {module}` did not name the module's directory: {listed[-500:]}",
                service="s3",
            ) from exc
        notify(f"building SeaweedFS {self.version} with {go} (first use only; a few minutes)")
        staging = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self._run(
            [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging / "weed"), "./weed"],
            cwd=source,
            env=env,
        )
        shutil.rmtree(self.root, ignore_errors=True)
        staging.rename(self.root)
        notify(f"SeaweedFS built: {self.path}")
        return True

    def _run(self, cmd: list[str], *, cwd: Path, env: dict[str, str]) -> str:
        """Run one go command, appending its output to the build log.

        Raises:
            S3BuildError: it exited non-zero.
        """
        result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        with self.build_log.open("a") as log:
            log.write(f"$ {' '.join(cmd)}\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise S3BuildError(
                f"building the local S3 server failed: `{' '.join(cmd[:3])} …` exited {result.returncode} "
                f"(full log: {self.build_log}):\n{tail}",
                service="s3",
            )
        return result.stdout
