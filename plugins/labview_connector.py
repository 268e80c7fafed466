"""Built-in plugin: the LabVIEW connector (LabVIEW Web Services over HTTP).

Registers :class:`~osprey_core.control.labview.LabviewConnector` as ``labview`` and its
``labview:`` config section. The connector module (and pydantic with it) is imported when
the hooks are called, not when the plugin is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from osprey_core.hookspecs import hookimpl


@hookimpl
def register_connectors(register: Callable[[type[Any]], None]) -> None:
    from osprey_core.control.labview import LabviewConnector

    register(LabviewConnector)


@hookimpl
def register_config_sections(register: Callable[[str, type[Any]], None]) -> None:
    from osprey_core.control.labview import LabviewSettings

    register("labview", LabviewSettings)
