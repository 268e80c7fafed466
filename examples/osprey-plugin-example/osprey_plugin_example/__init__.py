"""An example osprey plugin: the template for a facility's own ``osprey-plugin-<name>``.

This module is what the ``osprey`` entry point names, so osprey imports it on every
command (``--help`` included). It therefore holds only the hook implementations and
imports what they need inside each hook: a plugin that imports heavy libraries here slows
down every ``osprey`` invocation of every user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from osprey_core import hookimpl

if TYPE_CHECKING:
    import typer
    from pydantic import BaseModel

    from osprey_core.hookspecs.capabilities import Capability

__version__ = "0.1.0"


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    from osprey_plugin_example.capability import BeamKinematicsCapability

    register(BeamKinematicsCapability())


@hookimpl
def register_config_sections(register: Callable[[str, type[BaseModel]], None]) -> None:
    from osprey_plugin_example.settings import ExampleSettings

    register("example", ExampleSettings)


@hookimpl
def register_commands(app: typer.Typer) -> None:
    from osprey_plugin_example.cli import example_app

    app.add_typer(example_app, name="example")
