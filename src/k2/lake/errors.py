"""Errors of the Iceberg lake layer."""

from __future__ import annotations

from k2.errors import K2Error

__all__ = ["CatalogError", "LakeError", "StaleWriterError", "StorageError", "TableMissingError"]


class LakeError(K2Error):
    """Something went wrong reading or writing the Iceberg tables."""


class CatalogError(LakeError):
    """The catalog could not be opened (bad URI, missing driver extra)."""


class StorageError(LakeError):
    """The warehouse's storage (local disk or S3) could not be reached, listed or configured."""


class TableMissingError(LakeError):
    def __init__(self, table: str) -> None:
        super().__init__(f"Iceberg table does not exist: {table}; run `k2 lake init` first")
        self.table = table


class StaleWriterError(LakeError):
    """Another writer already committed past this batch's start offsets: this writer is fenced.

    Raised instead of committing, so two consumers can never both write the same Kafka range.
    """

    def __init__(self, table: str, expected: object, found: object) -> None:
        super().__init__(
            f"commit to {table} refused: its last snapshot covers offsets {found}, "
            f"but this batch starts at {expected}"
        )
        self.table = table
        self.expected = expected
        self.found = found
