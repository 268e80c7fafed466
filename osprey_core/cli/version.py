"""``osprey version``."""

from __future__ import annotations

import platform
from importlib.metadata import version

import typer

from osprey_core.cli.output import print_json


def show_version(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print the osprey-core and Python versions."""
    info = {"osprey-core": version("osprey-core"), "python": platform.python_version()}
    if as_json:
        print_json(info)
    else:
        print(f"osprey-core {info['osprey-core']} (Python {info['python']})")
