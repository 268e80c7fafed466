"""The public plugin API of osprey-core: one module per hook family.

Each module holds the base interface a plugin implements for that family and the hook
that hands the implementation to the core. Specs change only by addition, so a plugin
written against an older osprey-core keeps loading.

Plugins mark their implementations with :data:`hookimpl` (re-exported as
``osprey_core.hookimpl``). Registration hooks receive a ``register`` callback: the core
owns every registry, records which plugin contributed what, and refuses duplicate names.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "osprey"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: Modules under ``osprey_core.hookspecs`` that declare hooks, in documentation order.
SPEC_MODULES: tuple[str, ...] = (
    "capabilities",
    "data_providers",
    "code_generators",
    "execution_backends",
    "connectors",
    "archivers",
    "approval_policies",
    "logbook_adapters",
    "embedding_models",
    "services",
    "commands",
    "config_sections",
    "observers",
)

__all__ = ["PROJECT_NAME", "SPEC_MODULES", "hookimpl", "hookspec"]
