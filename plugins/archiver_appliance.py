"""Built-in plugin: the EPICS Archiver Appliance archiver (HTTP JSON retrieval API).

Registers :class:`~osprey_core.control.archiver_appliance.ArchiverApplianceConnector` as
``archiver_appliance`` and its ``archiver_appliance:`` config section. The archiver module
(and pydantic with it) is imported when the hooks are called, not when the plugin loads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from osprey_core.hookspecs import hookimpl


@hookimpl
def register_archivers(register: Callable[[type[Any]], None]) -> None:
    from osprey_core.control.archiver_appliance import ArchiverApplianceConnector

    register(ArchiverApplianceConnector)


@hookimpl
def register_config_sections(register: Callable[[str, type[Any]], None]) -> None:
    from osprey_core.control.archiver_appliance import ArchiverApplianceSettings

    register("archiver_appliance", ArchiverApplianceSettings)
