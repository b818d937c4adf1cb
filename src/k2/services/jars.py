"""The Apache Kafka broker's jars, fetched from Maven Central with Maven itself.

K2 names no download host: Maven resolves ``kafka_2.13`` and its runtime dependencies, honouring
the user's ``settings.xml`` (mirrors, proxies), with strict checksum checks against the repository.

The jars are pinned, not trusted on first use: ``kafka-<version>.sha256`` beside this module (in the
repository, reviewed like code; ``sha256sum -c`` reads it) lists every jar of each supported Kafka
version with its SHA-256. Before each start every listed jar is checked against it, and only the
listed jars go on the classpath: a jar that is missing, altered or merely added to ``libs/`` is
never loaded. A version without a list is refused; to support one, fetch it on a trusted machine
and commit its list (``KafkaJars.pin_file`` names the file).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from k2.services.errors import KafkaDownloadError

__all__ = ["LOG4J_VERSION", "KafkaJars"]

LOG4J_VERSION = "2.25.3"
#: Where the per-version jar lists live (package data).
_PINS_DIR = Path(__file__).resolve().parent

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.k2</groupId>
  <artifactId>k2-kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


class KafkaJars:
    """The jar directory of one Kafka version under K2's cache."""

    def __init__(self, cache_dir: Path, version: str, *, pins_dir: Path = _PINS_DIR) -> None:
        self.version = version
        self.root = cache_dir / f"kafka-{version}"
        self.libs = self.root / "libs"
        self.manifest = self.root / "manifest.json"
        self.pin_file = pins_dir / f"kafka-{version}.sha256"

    def pinned(self) -> dict[str, str]:
        """Jar name -> SHA-256 from the repository's list for this version.

        Raises:
            KafkaDownloadError: K2 has no list for this version (it would have to trust the download).
        """
        try:
            lines = self.pin_file.read_text().splitlines()
        except OSError as exc:
            raise KafkaDownloadError(
                f"Kafka {self.version} has no pinned jar checksums ({self.pin_file} is missing): K2 only "
                "runs Kafka versions whose jars are listed in the repository; use a listed version "
                "(K2_KAFKA__VERSION) or add the list",
                service="kafka",
            ) from exc
        pins: dict[str, str] = {}
        for line in lines:
            digest, _, name = line.strip().partition("  ")
            if digest and name:
                pins[name.strip()] = digest.lower()
        return pins

    @property
    def classpath(self) -> str:
        """Exactly the pinned jars, by name: an extra file in ``libs/`` is never on it."""
        return os.pathsep.join(str(self.libs / name) for name in sorted(self.pinned()))

    def cached(self) -> bool:
        return self.manifest.is_file()

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.libs.glob("*.jar")) if self.libs.exists() else 0

    def ensure(self) -> bool:
        """Fetch the jars unless cached; verify them either way. Returns True when it downloaded.

        Raises:
            KafkaDownloadError: Maven is missing, the download failed, or a checksum did not match.
        """
        self.pinned()  # no list, no download: refuse before fetching anything
        if self.cached():
            self.verify()
            return False
        self._download()
        self.verify()  # what Maven fetched must be what the repository lists
        self._write_manifest()
        return True

    def verify(self) -> None:
        """Compare every jar the classpath names with its SHA-256 pinned in the repository.

        Raises:
            KafkaDownloadError: no list for this version, or a jar is missing or altered; delete the
                cache directory to refetch.
        """
        expected = self.pinned()
        for name, digest in expected.items():
            path = self.libs / name
            if not path.is_file() or _sha256(path) != digest:
                raise KafkaDownloadError(
                    f"Kafka jar {path} is missing or does not match its pinned checksum ({self.pin_file.name}); "
                    f"remove {self.root} and run `k2 services up` again to refetch",
                    service="kafka",
                )

    def _download(self) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaDownloadError(
                "Apache Maven (`mvn`) is needed once to fetch the Kafka jars from Maven Central; "
                "install it (Debian: apt-get install maven) or point K2_KAFKA__BOOTSTRAP_SERVERS "
                "at an existing Kafka cluster",
                service="kafka",
            )
        staging = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "pom.xml").write_text(_POM.format(kafka=self.version, log4j=LOG4J_VERSION))
        cmd = [
            mvn, "-B", "-q", "--strict-checksums", "-f", str(staging / "pom.xml"),
            "dependency:copy-dependencies", f"-DoutputDirectory={staging / 'libs'}", "-DincludeScope=runtime",
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise KafkaDownloadError(
                f"Maven could not fetch Apache Kafka {self.version} (exit {result.returncode}):\n{tail}",
                service="kafka",
            )
        shutil.rmtree(self.root, ignore_errors=True)
        staging.rename(self.root)

    def _write_manifest(self) -> None:
        digests = {p.name: _sha256(p) for p in sorted(self.libs.glob("*.jar"))}
        if not any(name.startswith("kafka_2.13-") for name in digests):
            raise KafkaDownloadError(f"no kafka_2.13 jar in {self.libs} after download", service="kafka")
        self.manifest.write_text(json.dumps({"version": self.version, "sha256": digests}, indent=1))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
