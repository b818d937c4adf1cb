"""The ``k2`` command. Each sub-command group lives in a sibling module."""

from __future__ import annotations

from k2.cli.app import app, main

__all__ = ["app", "main"]
