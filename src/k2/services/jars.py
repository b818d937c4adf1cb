"""Jars K2 runs beside Python (the Kafka broker; Spark's Iceberg runtime), fetched with Maven itself.

K2 names no download host: Maven resolves the artifacts (``kafka_2.13`` and its runtime
dependencies; ``iceberg-spark-runtime``, the catalog's JDBC drivers and ``iceberg-aws-bundle``), honouring the user's
``settings.xml`` (mirrors, proxies), with strict checksum checks against the repository.

The jars are pinned, not trusted on first use: a ``<name>.sha256`` file beside this module (in the
repository, reviewed like code; ``sha256sum -c`` reads it) lists every jar of each supported
version with its SHA-256. Before each use every listed jar is checked against it, and only the
listed jars go on the classpath: a jar that is missing, altered or merely added to ``libs/`` is
never loaded. A version without a list is refused; to support one, fetch it on a trusted machine
and commit its list (``pin_file`` names the file).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from pathlib import Path

from k2.services.errors import JarDownloadError, KafkaDownloadError

__all__ = [
    "ICEBERG_VERSION",
    "LOG4J_VERSION",
    "POSTGRES_JDBC_VERSION",
    "SPARK_MINOR",
    "SQLITE_JDBC_VERSION",
    "KafkaJars",
    "PinnedJars",
    "SparkJars",
]

LOG4J_VERSION = "2.25.3"
#: Iceberg's Spark runtime (shaded, no dependencies) and its AWS bundle are of this version.
ICEBERG_VERSION = "1.10.1"
#: The Spark line the runtime is built for; pyspark must be of the same minor version (the scale extra).
SPARK_MINOR = "4.0"
#: JDBC drivers for Iceberg's JDBC catalog: K2's SQLite catalog file, and PostgreSQL when configured.
SQLITE_JDBC_VERSION = "3.51.1.0"
POSTGRES_JDBC_VERSION = "42.7.8"
#: Where the per-version jar lists live (package data).
_PINS_DIR = Path(__file__).resolve().parent

_KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
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

_SPARK_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.k2</groupId>
  <artifactId>k2-spark-iceberg</artifactId>
  <version>{iceberg}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.iceberg</groupId><artifactId>iceberg-spark-runtime-{spark}_2.13</artifactId>
      <version>{iceberg}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.iceberg</groupId><artifactId>iceberg-aws-bundle</artifactId><version>{iceberg}</version>
    </dependency>
    <dependency>
      <groupId>org.xerial</groupId><artifactId>sqlite-jdbc</artifactId><version>{sqlite}</version>
    </dependency>
    <dependency>
      <groupId>org.postgresql</groupId><artifactId>postgresql</artifactId><version>{postgres}</version>
    </dependency>
  </dependencies>
</project>
"""


class PinnedJars(ABC):
    """One set of jars under K2's cache, fetched by Maven from a generated POM and pinned by SHA-256.

    Subclasses name the set, its POM and the error raised; the fetch, the pins and the classpath
    are shared so that every jar K2 puts on a JVM's classpath passes the same checks.
    """

    #: The error raised for a missing list, a failed fetch or a checksum mismatch.
    error: type[JarDownloadError] = JarDownloadError
    #: The service named in errors (ServiceError.service).
    service = "jars"
    #: Extra arguments to ``mvn dependency:copy-dependencies``.
    maven_args: tuple[str, ...] = ()

    def __init__(self, root: Path, pin_file: Path, label: str) -> None:
        self.root = root
        self.libs = root / "libs"
        self.manifest = root / "manifest.json"
        self.pin_file = pin_file
        self.label = label

    @abstractmethod
    def pom(self) -> str:
        """The POM whose dependencies are the jars (a pom-packaged project that builds nothing)."""

    @abstractmethod
    def main_jar_prefix(self) -> str:
        """A jar name prefix that must be among the fetched jars (catches an empty resolution)."""

    def missing_pins_hint(self) -> str:
        return "use a listed version or add the list"

    def pinned(self) -> dict[str, str]:
        """Jar name -> SHA-256 from the repository's list for this version.

        Raises:
            JarDownloadError: K2 has no list for this version (it would have to trust the download).
        """
        try:
            lines = self.pin_file.read_text().splitlines()
        except OSError as exc:
            raise self.error(
                f"{self.label} has no pinned jar checksums ({self.pin_file} is missing): K2 only "
                f"runs versions whose jars are listed in the repository; {self.missing_pins_hint()}",
                service=self.service,
            ) from exc
        pins: dict[str, str] = {}
        for line in lines:
            digest, _, name = line.strip().partition("  ")
            if digest and name:
                pins[name.strip()] = digest.lower()
        return pins

    def paths(self) -> list[Path]:
        """Exactly the pinned jars, by name: an extra file in ``libs/`` is never among them."""
        return [self.libs / name for name in sorted(self.pinned())]

    @property
    def classpath(self) -> str:
        return os.pathsep.join(str(p) for p in self.paths())

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.libs.glob("*.jar")) if self.libs.exists() else 0

    def cached(self) -> bool:
        """Fetched, and by a list naming no fewer jars than the repository's (a list that gained a jar,
        like Spark's AWS bundle, refetches instead of failing on the jar the old fetch lacks)."""
        try:
            fetched = json.loads(self.manifest.read_text())["sha256"]
            return isinstance(fetched, dict) and set(self.pinned()) <= set(fetched)
        except (OSError, ValueError, KeyError, TypeError, JarDownloadError):
            return False

    def ensure(self) -> bool:
        """Fetch the jars unless cached; verify them either way. Returns True when it downloaded.

        Raises:
            JarDownloadError: Maven is missing, the download failed, or a checksum did not match.
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
            JarDownloadError: no list for this version, or a jar is missing or altered; delete the
                cache directory to refetch.
        """
        for name, digest in self.pinned().items():
            path = self.libs / name
            if not path.is_file() or _sha256(path) != digest:
                raise self.error(
                    f"{self.label} jar {path} is missing or does not match its pinned checksum "
                    f"({self.pin_file.name}); remove {self.root} to refetch",
                    service=self.service,
                )

    def _missing_maven(self) -> JarDownloadError:
        return self.error(
            f"Apache Maven (`mvn`) is needed once to fetch the {self.label} jars from Maven Central; "
            "install it (Debian: apt-get install maven)",
            service=self.service,
        )

    def _download(self) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise self._missing_maven()
        staging = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "pom.xml").write_text(self.pom())
        cmd = [
            mvn, "-B", "-q", "--strict-checksums", "-f", str(staging / "pom.xml"),
            "dependency:copy-dependencies", f"-DoutputDirectory={staging / 'libs'}", "-DincludeScope=runtime",
            *self.maven_args,
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise self.error(
                f"Maven could not fetch {self.label} (exit {result.returncode}):\n{tail}",
                service=self.service,
            )
        shutil.rmtree(self.root, ignore_errors=True)
        staging.rename(self.root)

    def _write_manifest(self) -> None:
        digests = {p.name: _sha256(p) for p in sorted(self.libs.glob("*.jar"))}
        if not any(name.startswith(self.main_jar_prefix()) for name in digests):
            raise self.error(
                f"no {self.main_jar_prefix()} jar in {self.libs} after download", service=self.service
            )
        self.manifest.write_text(json.dumps({"label": self.label, "sha256": digests}, indent=1))


class KafkaJars(PinnedJars):
    """The jar directory of one Kafka version under K2's cache."""

    error = KafkaDownloadError
    service = "kafka"

    def __init__(self, cache_dir: Path, version: str, *, pins_dir: Path = _PINS_DIR) -> None:
        self.version = version
        super().__init__(
            cache_dir / f"kafka-{version}", pins_dir / f"kafka-{version}.sha256", f"Kafka {version}"
        )

    def pom(self) -> str:
        return _KAFKA_POM.format(kafka=self.version, log4j=LOG4J_VERSION)

    def main_jar_prefix(self) -> str:
        return "kafka_2.13-"

    def missing_pins_hint(self) -> str:
        return "use a listed version (K2_KAFKA__VERSION) or add the list"

    def _missing_maven(self) -> JarDownloadError:
        return self.error(
            "Apache Maven (`mvn`) is needed once to fetch the Kafka jars from Maven Central; "
            "install it (Debian: apt-get install maven) or point K2_KAFKA__BOOTSTRAP_SERVERS "
            "at an existing Kafka cluster",
            service=self.service,
        )


class SparkJars(PinnedJars):
    """Iceberg's Spark runtime, the JDBC drivers of the catalogs K2 uses (SQLite, PostgreSQL) and
    Iceberg's AWS bundle (``S3FileIO`` and the AWS SDK it needs, for a warehouse on S3).

    Only these four jars: the runtime and the bundle are shaded and Spark brings its own logging, so
    transitive dependencies are excluded (they would only shadow Spark's). Spark gets them by path
    (``spark.jars``), never by ``spark.jars.packages``, which would download past the pins.
    """

    service = "spark"
    maven_args = ("-DexcludeTransitive=true",)

    def __init__(
        self,
        cache_dir: Path,
        *,
        spark_minor: str = SPARK_MINOR,
        iceberg: str = ICEBERG_VERSION,
        pins_dir: Path = _PINS_DIR,
    ) -> None:
        self.spark_minor = spark_minor
        self.iceberg = iceberg
        name = f"spark-{spark_minor}-iceberg-{iceberg}"
        super().__init__(
            cache_dir / name, pins_dir / f"{name}.sha256", f"Iceberg {iceberg} for Spark {spark_minor}"
        )

    def pom(self) -> str:
        return _SPARK_POM.format(
            spark=self.spark_minor,
            iceberg=self.iceberg,
            sqlite=SQLITE_JDBC_VERSION,
            postgres=POSTGRES_JDBC_VERSION,
        )

    def main_jar_prefix(self) -> str:
        return f"iceberg-spark-runtime-{self.spark_minor}_2.13-"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
