"""End-to-end tests through the ``k2`` command (marked ``e2e`` by tests/conftest.py): none yet.

The end-to-end checks today are ``make demo`` (``k2 demo`` compares Iceberg with the simulator's
ground truth) and the CLI tests among tests/integration (``test_feed_cli``, ``test_dlq``,
``test_gap_timeout``), which run real ``k2`` processes against real services. A test that drives
the whole CLI on a clean data directory belongs here.
"""
