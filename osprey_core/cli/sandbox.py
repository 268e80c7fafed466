"""``osprey sandbox``: prepare and check the sandbox that generated code runs in."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.state import cli_state

if TYPE_CHECKING:
    from osprey_core.settings import ExecutionSettings

sandbox_app = typer.Typer(help="Prepare and check the sandbox that generated code runs in.",
                          no_args_is_help=True)

RUNTIME_DIR = typer.Option(None, "--runtime-dir", help="Where the jail's interpreter lives "
                           "(default: execution.runtime_dir, /opt/osprey-sandbox).")


def _settings(ctx: typer.Context, runtime_dir: Path | None) -> ExecutionSettings:
    settings = cli_state(ctx).config().section("execution")
    if runtime_dir is not None:
        settings = settings.model_copy(update={"runtime_dir": runtime_dir.absolute()})
    return settings


@sandbox_app.command("setup")
def setup(ctx: typer.Context, runtime_dir: Path | None = RUNTIME_DIR) -> None:
    """Prepare the jail's interpreter: a world-readable copy of this Python with numpy,
    matplotlib and pandas, plus osprey's in-jail modules. Quick when already prepared."""
    from osprey_core.sandbox.prepare import prepare_runtime

    info = prepare_runtime(_settings(ctx, runtime_dir),
                           progress=lambda message: typer.echo(message, err=True))
    typer.echo(f"sandbox runtime ready: Python {info.python_version} at {info.python_dir} "
               f"(packages: {', '.join(info.packages)})")


@sandbox_app.command("check")
def check(ctx: typer.Context, runtime_dir: Path | None = RUNTIME_DIR,
          as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Report what works for the configured backend (runs two tiny trial jobs).
    Exit 1 if it cannot run code."""
    state = cli_state(ctx)
    settings = _settings(ctx, runtime_dir)
    backend = state.host.execution_backends().get(settings.backend)(settings, state.config().home)
    items = backend.check()
    if as_json:
        print_json({"backend": backend.name, "isolated": backend.isolated,
                    "ok": all(item.ok for item in items),
                    "checks": [{"name": item.name, "ok": item.ok, "detail": item.detail}
                               for item in items]})
    else:
        print_table(f"sandbox check: backend {backend.name}", ("check", "ok", "detail"),
                    [(item.name, "yes" if item.ok else "NO", item.detail) for item in items])
    if not all(item.ok for item in items):
        raise typer.Exit(1)
