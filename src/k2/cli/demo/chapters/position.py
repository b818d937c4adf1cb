"""Chapter 1, position: the services come up, the API serves the dashboard, and what K2 is and is not."""

from __future__ import annotations

import time
import urllib.request

from k2.cli.demo.stage import Proc, Stage, tail

__all__ = ["position"]


def position(stage: Stage) -> None:
    from k2.lake import ensure_tables, open_catalog
    from k2.services import Launcher
    from k2.services.process import free_port

    settings = stage.settings
    names = ["kafka", "redis"] if settings.state.backend == "redis" else ["kafka"]
    if settings.lake.catalog == "postgres":  # the local catalog server (external: the launcher starts none)
        names.append("postgres")
    statuses = Launcher(settings).up(names, timeout_s=120)
    for status in statuses:
        pid = f" (pid {status.pid})" if status.pid else ""
        stage.say(f"{status.name} {status.state} at {status.address}{pid}")
    stage.check("the services are up", all(s.healthy for s in statuses), ", ".join(s.name for s in statuses))
    tables = ensure_tables(open_catalog(settings), settings.lake.namespace)
    stage.say(f"Iceberg namespace {settings.lake.namespace}: {', '.join(tables)}")

    stage.say("[bold]K2 is[/] an analytics platform for market data: research, compliance, data engineering.")
    stage.say(
        "[bold]Its answers are sub-second[/]: history and the live tail in milliseconds, fresh within ~1 s."
    )
    stage.say("[bold]K2 is not[/] an execution or market-making system: those need microseconds, not a lake.")

    port = settings.api.port if _free(settings.api.host, settings.api.port) else free_port()
    api = stage.spawn("serve", ["serve", "--port", str(port)])
    url = f"http://{settings.api.host}:{port}/"
    healthy = _wait_healthy(url + "health", api, 60)
    stage.facts["api_url"] = url
    stage.say(f"dashboard: [bold]{url}[/]  (API docs {url}docs) — served by `k2 serve` (pid {api.popen.pid})")
    stage.check("the API answers /health", healthy, url + "health" if healthy else tail(api))


def _free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _wait_healthy(url: str, server: Proc, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.alive:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False
