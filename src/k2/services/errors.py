"""Errors of the local service launcher."""

from __future__ import annotations

from k2.errors import K2Error

__all__ = ["JavaMissingError", "KafkaDownloadError", "S3BuildError", "ServiceError", "ServiceStartError"]


class ServiceError(K2Error):
    """A local service could not be managed."""

    def __init__(self, message: str, *, service: str) -> None:
        super().__init__(message)
        self.service = service


class ServiceStartError(ServiceError):
    """A service was started but did not become ready; the message holds its log's tail."""


class JavaMissingError(ServiceError):
    """No Java 17+ runtime, which the Kafka broker needs."""


class KafkaDownloadError(ServiceError):
    """The Kafka jars could not be fetched with Maven or failed their checksum."""


class S3BuildError(ServiceError):
    """The local S3 server (SeaweedFS) could not be downloaded or built with Go."""
