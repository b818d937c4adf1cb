"""The stage every chapter plays on: the run's settings, its real ``k2`` processes, and what chapters hand on.

Processes that a chapter may kill or multiply (``k2 ingest``, ``k2 serve``, the feeds) run as real
``k2`` subprocesses with the demo's settings: the caller's environment and ``--config``, plus the
sections the demo derived, passed as ``K2_*`` variables (environment beats the file). Their
output goes to log files in the run's directory; a failing chapter prints the tail of the log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k2.cli.context import Context
from k2.cli.demo.runner import Narrator
from k2.config import Settings, derive

__all__ = ["Proc", "Stage", "env_vars"]


def env_vars(sections: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{"lake": {"namespace": "x"}}`` as ``{"K2_LAKE__NAMESPACE": "x"}`` (nested dicts nest further)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}__{key.upper()}", inner)
        elif value is not None:  # None: the default (an empty variable would be a value)
            out[prefix] = str(value).lower() if isinstance(value, bool) else str(value)

    for name, fields in sections.items():
        walk(f"K2_{name.upper()}", fields)
    return out


@dataclass
class Proc:
    """A ``k2`` subprocess and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def wait(self, timeout_s: float) -> int:
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            raise

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines of this process whose event is ``name``."""
        found = []
        for line in self.text().splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("event") == name:
                    found.append(record)
        return found

    def json_output(self) -> Any:
        """The JSON document a ``--json`` command printed (its stdout, kept apart from the log)."""
        return json.loads(self.output())

    def output(self) -> str:
        """What the command printed on stdout (its log, on stderr, is ``log``)."""
        return self.log.with_suffix(".out").read_text(errors="replace")


@dataclass
class Stage:
    """One demo run: its settings, console, directory, pace, and the facts chapters hand on."""

    context: Context
    narrator: Narrator
    run_id: str
    workdir: Path
    fast: bool
    derived: dict[str, dict[str, Any]]
    config_file: Path | None = None
    asx: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.context.settings

    def say(self, text: str) -> None:
        self.narrator.say(text)

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        return self.narrator.check(what, ok, detail)

    # -- scratch namespaces ---------------------------------------------------------------------------
    def scratch(self, name: str, **sections: dict[str, Any]) -> tuple[Settings, dict[str, dict[str, Any]]]:
        """Settings of a namespace, topics and group of this chapter's own (its truth is its alone)."""
        own: dict[str, dict[str, Any]] = {k: dict(v) for k, v in self.derived.items()}
        names: dict[str, dict[str, Any]] = {
            "kafka": {"topic_prefix": f"demo{self.run_id}-{name}."},
            "lake": {"namespace": f"demo{self.run_id}_{name}"},
            "pipeline": {"group_id": f"demo{self.run_id}-{name}", "instance_id": None},
        }
        for changes in (names, sections):
            for section, fields in changes.items():
                own[section] = {**own.get(section, {}), **fields}
        return derive(self.settings, **own), own

    # -- k2 subprocesses ------------------------------------------------------------------------------
    def env(self, sections: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        if self.config_file is not None:
            env["K2_CONFIG"] = str(self.config_file)
        env.update(env_vars(self.derived if sections is None else sections))
        env["K2_LOG__FORMAT"] = "json"  # the demo reads the events it narrates
        env["RUST_BACKTRACE"] = "0"
        return env

    def spawn(self, name: str, args: list[str], sections: dict[str, dict[str, Any]] | None = None) -> Proc:
        """Start ``k2 ARGS``; stderr (the JSON log) to ``NAME.log``, stdout to ``NAME.out``."""
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        with log.open("wb") as err, log.with_suffix(".out").open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "k2.cli", *args],
                env=self.env(sections),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def k2(
        self,
        name: str,
        args: list[str],
        sections: dict[str, dict[str, Any]] | None = None,
        timeout_s: float = 300,
    ) -> Proc:
        """Run ``k2 ARGS`` to its end.

        Raises:
            RuntimeError: it exited non-zero (the message carries its log's tail).
        """
        proc = self.spawn(name, args, sections)
        code = proc.wait(timeout_s)
        if code != 0:
            raise RuntimeError(f"k2 {' '.join(args)} exited {code}:\n{tail(proc)}")
        return proc

    def stop_all(self) -> None:
        """Terminate whatever this run started and is still running (the API server, a stray ingest)."""
        for proc in self.procs:
            if proc.alive:
                proc.popen.terminate()
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()


def tail(proc: Proc, lines: int = 15) -> str:
    return "\n".join(proc.text().splitlines()[-lines:])
