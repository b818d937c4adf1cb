"""The root of every error K2 raises on purpose.

Each package keeps its own ``errors.py`` with subclasses that carry context as attributes; the CLI
and the API translate them once, at their edge, into exit codes and HTTP statuses.
"""

from __future__ import annotations

__all__ = ["ConfigError", "K2Error"]


class K2Error(Exception):
    """Something K2 understands went wrong; the message says what and how to fix it."""

    exit_code: int = 1


class ConfigError(K2Error):
    """A setting is invalid or a configuration file is missing."""

    exit_code = 2
