"""What every sub-command receives: the one Settings object and a console.

The root callback only records its options (``Root``); the Settings are built on the first
``obj(ctx)``. ``k2 --help`` and ``k2 <cmd> --help`` therefore never import pydantic or read the
configuration, and a command that re-dispatches others (``k2 demo``) hands them its own
``Context`` so that they see the same configuration.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from k2.errors import K2Error

if TYPE_CHECKING:
    from k2.config import Settings

__all__ = ["Context", "Root", "dispatch", "dump_json", "handle_errors", "obj"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Context:
    settings: Settings
    console: Console
    err: Console


class Root:
    """The root command's options; builds the Context once, when a command first asks for it."""

    def __init__(self, config: Path | None = None, *, verbose: bool = False) -> None:
        self.config = config
        self.verbose = verbose
        self._context: Context | None = None

    def context(self) -> Context:
        """Load the settings (a bad value stops here with a message naming it) and configure logging.

        Raises:
            typer.Exit: the configuration is invalid (with ConfigError's exit code).
        """
        if self._context is None:
            from k2.config import load_settings
            from k2.observability.logging import configure_logging

            err = Console(stderr=True)
            try:
                settings = load_settings(self.config)
            except K2Error as exc:
                err.print(f"[bold red]error:[/] {exc}", highlight=False)
                raise typer.Exit(exc.exit_code) from exc
            configure_logging(settings.log, verbose=self.verbose)
            self._context = Context(settings=settings, console=Console(), err=err)
        return self._context


def obj(ctx: typer.Context) -> Context:
    """The Context of this invocation (built on first use from the root command's options)."""
    value = ctx.obj
    if isinstance(value, Root):
        return value.context()
    assert isinstance(value, Context), "the k2 callback sets the root options"
    return value


def dispatch(context: Context, args: list[str]) -> None:
    """Run ``k2 ARGS`` in this process with ``context``: its settings, not a fresh load of them.

    A re-dispatch that parsed the configuration again would lose the root's ``--config`` and any
    setting the caller derived (the demo's own namespace and topic prefix).
    """
    from typer.main import get_command

    from k2.cli.app import app

    get_command(app).main(args, prog_name="k2", standalone_mode=False, obj=context)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn K2's own errors into one red line and the error's exit code, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except K2Error as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(exc.exit_code) from exc
        except KeyboardInterrupt:
            Console(stderr=True).print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def dump_json(data: Any) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
