"""What every sub-command receives: the one Settings object and a console."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from k2.config import Settings
from k2.errors import K2Error

__all__ = ["Context", "handle_errors", "obj"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Context:
    settings: Settings
    console: Console
    err: Console


def obj(ctx: typer.Context) -> Context:
    value = ctx.obj
    assert isinstance(value, Context), "the k2 callback builds the context"
    return value


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
