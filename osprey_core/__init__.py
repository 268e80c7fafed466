"""osprey-core: a plugin framework for running AI agents safely in high-stakes facilities.

Importing this package has no side effects: plugins load when you call
:func:`osprey_core.plugin_host.load_plugins` or create an :class:`Osprey`.
"""

from typing import TYPE_CHECKING, Any

from osprey_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from osprey_core.api import Osprey

__all__ = ["Osprey", "hookimpl"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import osprey_core` (and `osprey --help`) never pays for the orchestrator.
    if name == "Osprey":
        from osprey_core.api import Osprey

        return Osprey
    raise AttributeError(f"module 'osprey_core' has no attribute {name!r}")
