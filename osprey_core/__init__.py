"""osprey-core: a plugin framework for running AI agents safely in high-stakes facilities.

Importing this package has no side effects: plugins load when you call
:func:`osprey_core.plugin_host.load_plugins` or create an :class:`Osprey`. The embedding
API and the errors it raises are importable from here (``from osprey_core import Osprey,
ApprovalError``); each is imported on first use, so ``import osprey_core`` stays cheap.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from osprey_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.control.errors import (
        ChannelNotFoundError,
        ControlSystemError,
        ServerRejectedError,
    )
    from osprey_core.errors import (
        ApprovalError,
        ConfigError,
        DuplicateNameError,
        OspreyError,
        PluginError,
        RegistryError,
        RunError,
        StorageError,
        UnknownNameError,
    )
    from osprey_core.planning.base import PlanningError, PlanValidationError
    from osprey_core.store import ConflictError, StoreDamagedError, StoreError

#: Where each lazily exported name is defined.
_LAZY = {
    "Osprey": "osprey_core.api",
    **dict.fromkeys(("OspreyError", "ConfigError", "PluginError", "RegistryError",
                     "UnknownNameError", "DuplicateNameError", "StorageError",
                     "ApprovalError", "RunError"), "osprey_core.errors"),
    **dict.fromkeys(("PlanningError", "PlanValidationError"), "osprey_core.planning.base"),
    **dict.fromkeys(("StoreError", "ConflictError", "StoreDamagedError"), "osprey_core.store"),
    **dict.fromkeys(("ControlSystemError", "ChannelNotFoundError", "ServerRejectedError"),
                    "osprey_core.control.errors"),
}

__all__ = [
    "ApprovalError",
    "ChannelNotFoundError",
    "ConfigError",
    "ConflictError",
    "ControlSystemError",
    "DuplicateNameError",
    "Osprey",
    "OspreyError",
    "PlanValidationError",
    "PlanningError",
    "PluginError",
    "RegistryError",
    "RunError",
    "ServerRejectedError",
    "StorageError",
    "StoreDamagedError",
    "StoreError",
    "UnknownNameError",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    # Lazy, so `import osprey_core` (and `osprey --help`) never pays for the orchestrator.
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'osprey_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
