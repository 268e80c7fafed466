"""``osprey serve``: the HTTP API, the web console and the chat endpoint, under uvicorn.

One process, one event loop, one ``Osprey``. The listening socket is bound before the
URL is printed, so the URL is right even for ``--port 0`` (any free port).
"""

from __future__ import annotations

import dataclasses
import signal
import socket
from typing import TYPE_CHECKING, Any

import typer

from osprey_core.cli.state import cli_state
from osprey_core.errors import OspreyError

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default: "
                                    "service.host, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="Port (default: "
                                    "service.port, 8750; 0 picks a free one)."),
    json_logs: bool = typer.Option(False, "--json-logs", help="Log one JSON object a line "
                                   "(for a log collector)."),
) -> None:
    """Serve the HTTP API, web console and chat endpoint until Ctrl-C."""
    state = cli_state(ctx)
    config = _with_address(state.config(), host, port)
    settings = config.section("service")
    try:
        import uvicorn

        from osprey_core.service.app import create_app
    except ImportError as exc:
        raise OspreyError(f"osprey serve needs the 'serve' extra ({exc.name} is missing): "
                          "pip install 'osprey-core[serve]'") from None
    from osprey_core.api import Osprey

    listener = _bind(settings.host, settings.port)
    bound_port = listener.getsockname()[1]
    settings = settings.model_copy(update={"port": bound_port})
    config = _with_address(config, settings.host, bound_port)
    app = create_app(osprey=Osprey(host=state.host, config=config))
    if (notice := address_notice(settings.host)) is not None:
        typer.echo(notice, err=True)
    typer.echo(f"osprey serving {settings.url()} (API under /api/v1, schema at "
               "/openapi.json; Ctrl-C stops)", err=True)
    service = app.state.osprey_service

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            service.stopping = True  # event streams end, so stopping waits for no one
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(
        app, log_config=_log_config(json_logs), log_level="info", lifespan="on",
        timeout_graceful_shutdown=5, proxy_headers=False, server_header=False))
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass  # uvicorn stopped cleanly, then re-raised the signal it caught
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.close()
    typer.echo("osprey serve stopped.", err=True)


def address_notice(host: str) -> str | None:
    """What to tell whoever starts a server other machines can reach (``None`` on
    loopback)."""
    from osprey_core.service.settings import is_loopback

    if is_loopback(host):
        return None
    return (f"Notice: listening on {host}, not loopback: other machines can reach this "
            "service. Every request still needs a token or a trusted proxy; put TLS in "
            "front of it.")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _with_address(config: OspreyConfig, host: str | None, port: int | None) -> OspreyConfig:
    """``config`` with the service's host and port replaced where given."""
    service = config.section("service")
    update = {key: value for key, value in (("host", host), ("port", port)) if value is not None}
    if not update:
        return config
    service = service.model_copy(update=update)
    return dataclasses.replace(config, settings=config.settings.model_copy(
        update={"service": service}))


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, or an error naming the address (in use, not ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it a response written in two parts waits ~40 ms for the client's delayed ACK.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        raise OspreyError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                          "(another server there? use --port)") from None
    listener.set_inheritable(True)
    return listener


def _log_config(json_logs: bool) -> dict[str, Any]:
    """uvicorn's logging on stderr, tokens masked, as text or one JSON object a line."""
    formatter: dict[str, Any] = (
        {"()": "osprey_core.service.logs.JsonFormatter"} if json_logs else
        {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"})
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
               "formatter": "default", "filters": ["secrets"]}
    return {
        "version": 1, "disable_existing_loggers": False,
        "filters": {"secrets": {"()": "osprey_core.service.logs.SecretFilter"}},
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": {name: {"handlers": ["default"], "level": "INFO", "propagate": False}
                    for name in ("uvicorn", "uvicorn.access", "osprey_core")},
    }
