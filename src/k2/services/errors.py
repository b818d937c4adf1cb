"""Errors of the local service launcher."""

from __future__ import annotations

from k2.errors import K2Error

__all__ = [
    "JarDownloadError",
    "JavaMissingError",
    "KafkaDownloadError",
    "S3BuildError",
    "ServiceError",
    "ServiceStartError",
    "SparkMissingError",
]


class ServiceError(K2Error):
    """A local service could not be managed."""

    def __init__(self, message: str, *, service: str) -> None:
        super().__init__(message)
        self.service = service


class ServiceStartError(ServiceError):
    """A service was started but did not become ready; the message holds its log's tail."""


class JavaMissingError(ServiceError):
    """No Java 17+ runtime, which the Kafka broker needs."""


class JarDownloadError(ServiceError):
    """Jars could not be fetched with Maven or failed their pinned checksum."""


class KafkaDownloadError(JarDownloadError):
    """The Kafka jars could not be fetched with Maven or failed their checksum."""


class S3BuildError(ServiceError):
    """The local S3 server (SeaweedFS) could not be downloaded or built with Go."""


class SparkMissingError(ServiceError):
    """pyspark is not installed: it is K2's optional `scale` extra, too large for the default install."""
