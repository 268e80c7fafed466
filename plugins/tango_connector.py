"""Built-in plugin: the Tango connector (``control_system.type: tango``) and its section.

Loading this plugin imports neither pytango nor pydantic; the connector module is
imported when a registry or the configuration asks for it, and pytango only when the
connector connects (``pip install 'osprey-core[tango]'``).
"""

from __future__ import annotations

from typing import Any

from osprey_core.hookspecs import hookimpl


@hookimpl
def register_connectors(register: Any) -> None:
    from osprey_core.control.tango import TangoConnector

    register(TangoConnector)


@hookimpl
def register_config_sections(register: Any) -> None:
    from osprey_core.control.tango import TangoSettings

    register("tango", TangoSettings)
