"""Commands configure logging for the whole process (``k2 demo`` quiets it to errors): undo it after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from k2.config import LogSettings
from k2.observability.logging import configure_logging


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    yield
    configure_logging(LogSettings())
