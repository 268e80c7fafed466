"""Built-in plugin: the EPICS Channel Access connector (``control_system.type: epics``).

Registers :class:`~osprey_core.control.epics.EpicsConnector` and its ``epics`` config
section (address lists, gateways, put callback). Loading this plugin imports neither
pyepics nor numpy: the connector module is imported when a registry or the configuration
asks for it, and pyepics only when the connector connects
(``pip install 'osprey-core[epics]'``).
"""

from __future__ import annotations

from typing import Any

from osprey_core.hookspecs import hookimpl


@hookimpl
def register_connectors(register: Any) -> None:
    from osprey_core.control.epics import EpicsConnector

    register(EpicsConnector)


@hookimpl
def register_config_sections(register: Any) -> None:
    from osprey_core.control.epics import EpicsSettings

    register("epics", EpicsSettings)
