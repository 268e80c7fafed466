"""Built-in plugin: the ``deploy`` config section and the framework's deployable services
(``osprey.postgresql``, ``osprey.api``, ``osprey.jupyter``; see
:mod:`osprey_core.deploy.builtin` and ``docs/deployment.md``).

Everything is imported when the hooks run, so loading this plugin (every ``osprey``
command, ``--help`` included) costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from osprey_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from pydantic import BaseModel

    from osprey_core.hookspecs.services import ServiceSpec


@hookimpl
def register_config_sections(register: Callable[[str, type[BaseModel]], None]) -> None:
    from osprey_core.deploy.settings import DeploySettings

    register("deploy", DeploySettings)


@hookimpl
def register_services(register: Callable[[ServiceSpec], None]) -> None:
    from osprey_core.deploy.builtin import register_builtin_services

    register_builtin_services(register)
