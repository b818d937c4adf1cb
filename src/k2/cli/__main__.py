"""``python -m k2.cli`` — the same as the ``k2`` command (used by tests to run subprocesses)."""

from __future__ import annotations

from k2.cli.app import main

main()
