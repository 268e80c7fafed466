"""``osprey config``: show the effective configuration, write a starter file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from osprey_core.cli.output import print_json
from osprey_core.cli.state import cli_state
from osprey_core.errors import ConfigError, OspreyError

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig

config_app = typer.Typer(help="Show or create configuration.", no_args_is_help=True)


@config_app.command("show")
def show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML."),
) -> None:
    """Print the effective configuration (file + environment), secrets masked."""
    config = cli_state(ctx).config()
    if as_json:
        print_json(config.to_display())
    else:
        print(render_yaml(config), end="")


def render_yaml(config: OspreyConfig) -> str:
    """YAML for people: where it came from, then one block per section with its owner."""
    import yaml

    out = [f"# file: {config.path.absolute() if config.path else 'none (built-in defaults)'}"]
    out += [f"# {dotted} <- {env_key}" for env_key, dotted in sorted(config.env_overrides.items())]
    for key, value in config.to_display().items():
        out.append("")
        if key in config.sections:
            out.append(f"# plugin {config.sections[key]}")
        out.append(yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True).rstrip())
    return "\n".join(out) + "\n"


@config_app.command("init")
def init(
    ctx: typer.Context,
    path: Path | None = typer.Argument(
        None, help="Where to write (default: --config, $OSPREY_CONFIG, else ./osprey.yml).",
        dir_okay=False, show_default=False,
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter config with every setting at its default."""
    from osprey_core.config import init_target, load_config, starter_yaml
    from osprey_core.fileio import atomic_write_text

    state = cli_state(ctx)
    target = path or init_target(state.config_path, os.environ)
    if target.is_dir():
        raise OspreyError(f"{target} is a directory")
    if target.exists() and not force:
        raise OspreyError(f"{target} already exists; use --force to overwrite it")
    # 0600: this is where API keys and passwords will go.
    atomic_write_text(target, starter_yaml(state.host), mode=0o600)
    print(f"wrote {target}")
    try:
        load_config(state.host, target, environ={})
    except ConfigError as exc:  # a plugin section with required keys: the user must fill in
        typer.echo(f"Note: fill in the required settings before use.\n{exc}", err=True)
