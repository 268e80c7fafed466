"""``osprey version``."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import typer

from osprey_core.cli.output import print_json


def show_version(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print the osprey-core and Python versions."""
    if as_json:
        print_json(versions())
    else:
        print(version_line())


def versions() -> dict[str, str]:
    try:
        core = version("osprey-core")
    except PackageNotFoundError:  # running from a source tree that is not installed
        core = "unknown"
    return {"osprey-core": core, "python": platform.python_version()}


def version_line() -> str:
    info = versions()
    return f"osprey-core {info['osprey-core']} (Python {info['python']})"
