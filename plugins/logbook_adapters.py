"""Built-in plugin: the logbook adapters (registered as they are implemented)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from osprey_core.hookspecs import hookimpl


@hookimpl
def register_logbook_adapters(register: Callable[[type[Any]], None]) -> None:
    """Nothing yet: the built-in adapters land in ``osprey_core.logbook.adapters``."""
