"""Built-in plugin: the logbook adapters.

``json``, ``jsonl`` and ``csv`` read exports of any logbook through a field mapping;
``als``, ``jlab`` and ``ornl`` read the formats of those facilities' logbooks (``als`` also
its HTTP API). The implementations live in :mod:`osprey_core.logbook.adapters` and are
imported when the hook is called, so loading the plugin costs neither pydantic nor httpx.
Field mappings and options: ``docs/logbook-adapters.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from osprey_core.hookspecs import hookimpl


@hookimpl
def register_logbook_adapters(register: Callable[[type[Any]], None]) -> None:
    from osprey_core.logbook.adapters.als import AlsAdapter
    from osprey_core.logbook.adapters.generic import CsvAdapter, JsonAdapter, JsonLinesAdapter
    from osprey_core.logbook.adapters.jlab import JlabAdapter
    from osprey_core.logbook.adapters.ornl import OrnlAdapter

    for adapter in (JsonAdapter, JsonLinesAdapter, CsvAdapter, AlsAdapter, JlabAdapter,
                    OrnlAdapter):
        register(adapter)
