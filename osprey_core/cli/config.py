"""``osprey config``: show the effective configuration, write a starter file."""

from __future__ import annotations

from pathlib import Path

import typer

from osprey_core.cli.output import print_json
from osprey_core.cli.state import cli_state
from osprey_core.errors import OspreyError

config_app = typer.Typer(help="Show or create configuration.", no_args_is_help=True)


@config_app.command("show")
def show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML."),
) -> None:
    """Print the effective configuration (file + environment), secrets masked."""
    import yaml

    config = cli_state(ctx).config()
    data = config.to_display()
    if as_json:
        print_json(data)
        return
    source = config.path or "no file (defaults)"
    print(f"# source: {source}")
    for env_key, dotted in sorted(config.env_overrides.items()):
        print(f"# {dotted} overridden by {env_key}")
    print(yaml.safe_dump(data, sort_keys=False).rstrip())


@config_app.command("init")
def init(
    ctx: typer.Context,
    path: Path = typer.Argument(Path("osprey.yml"), help="Where to write the file."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter config with every setting at its default."""
    from osprey_core.config import starter_yaml
    from osprey_core.fileio import atomic_write_text

    if path.exists() and not force:
        raise OspreyError(f"{path} already exists; use --force to overwrite it")
    atomic_write_text(path, starter_yaml(cli_state(ctx).host))
    print(f"wrote {path}")
