"""``k2 serve``: the query API under uvicorn.

The lead registers it with ``app.command("serve")(serve_cmd.serve)``.
"""

from __future__ import annotations

import typer

from k2.cli.context import handle_errors, obj

__all__ = ["serve"]


@handle_errors
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Listen address (default api.host, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default api.port, 8000)."),
    reload: bool = typer.Option(False, help="Restart on code changes (development; loopback hosts only)."),
    publish_hybrid: bool = typer.Option(
        False,
        "--publish-hybrid",
        help="Replicas sharing hybrid settings (api.shared_hybrid): make this process's hybrid.* "
        "the group's, instead of adopting the group's stored ones.",
    ),
) -> None:
    """Serve the REST API (/v1/…, /health, /metrics, OpenAPI docs at /docs).

    Beyond localhost an API key is mandatory (api.api_keys): the server refuses to start without one.
    Replicas (api.rate_limit_backend = "redis", or api.shared_hybrid = "redis") serve one set of
    hybrid settings, kept in Redis: the first replica's, or the last published.
    """
    import uvicorn

    from k2.api.app import create_app
    from k2.api.errors import InsecureBindError
    from k2.api.security import is_loopback
    from k2.api.server import server_config

    context = obj(ctx)
    settings = context.settings
    api = settings.api.model_copy(update={k: v for k, v in (("host", host), ("port", port)) if v is not None})
    settings = settings.model_copy(update={"api": api})
    if reload:
        if not is_loopback(api.host):
            raise InsecureBindError(api.host)  # a reloaded worker re-reads settings: keep it local
        if publish_hybrid:
            raise typer.BadParameter("not with --reload (each reload would publish again)")
        context.err.print(f"serving on http://{api.host}:{api.port} (reload)")
        uvicorn.run("k2.cli.serve_cmd:_reload_factory", factory=True, host=api.host, port=api.port,
                    reload=True, log_config=None, access_log=False, proxy_headers=False)  # fmt: skip
        return
    app = create_app(settings, publish_hybrid=publish_hybrid)  # raises before binding anything
    hybrid = app.state.k2.hybrid_config
    context.err.print(f"serving on http://{api.host}:{api.port}  (docs: /docs, health: /health)")
    context.err.print(f"hybrid settings: {hybrid.source}, fingerprint {hybrid.fingerprint}")
    uvicorn.Server(server_config(settings, app)).run()


def _reload_factory() -> object:
    """Build the app in a reloader worker (settings from the environment / k2.toml, loopback only)."""
    from k2.api.app import create_app
    from k2.config import load_settings
    from k2.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log)
    return create_app(settings)
