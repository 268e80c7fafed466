"""osprey-core: a plugin framework for running AI agents safely in high-stakes facilities.

Importing this package has no side effects: plugins load when you call
:func:`osprey_core.plugin_host.load_plugins`.
"""

from osprey_core.hookspecs import hookimpl

__all__ = ["hookimpl"]
