"""An opt-in pytest plugin for testing osprey plugins and code that embeds osprey.

Enable it with ``pytest_plugins = ["osprey_core.testing"]`` in a root ``conftest.py`` or
with ``pytest -p osprey_core.testing``. It provides:

``osprey_host``
    A :class:`~osprey_core.plugin_host.PluginHost` with no entry points loaded and a
    default environment, so a test sees only the plugins it registers itself, never
    whatever happens to be installed next to it.
``register_plugin``
    ``register_plugin(plugin, name=None) -> PluginInfo`` registers a plugin on
    ``osprey_host`` for the current test and unregisters it at teardown.

Test doubles for every hook family live in :mod:`osprey_core.testing.fakes`.

Importing this module stays cheap: the plugin host is imported by the fixtures, so
enabling the plugin costs nothing for test sessions that never use them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from osprey_core.plugin_host import PluginHost, PluginInfo

__all__ = ["PluginRegistrar", "osprey_host", "register_plugin"]


class PluginRegistrar:
    """Registers plugins on one host and remembers them so :meth:`close` can undo it."""

    def __init__(self, host: PluginHost) -> None:
        self.host = host
        self._names: list[str] = []

    def __call__(self, plugin: object, name: str | None = None) -> PluginInfo:
        """Register ``plugin`` (a module, class or instance with ``@hookimpl`` methods)."""
        info = self.host.register(plugin, name)
        self._names.append(info.name)
        return info

    def close(self) -> None:
        """Unregister, newest first, every plugin this registrar added that is still there."""
        while self._names:
            self.host.unregister(self._names.pop())


@pytest.fixture
def osprey_host() -> PluginHost:
    """A plugin host isolated from installed plugins and from ``OSPREY_*`` variables."""
    from osprey_core.plugin_host import load_plugins

    return load_plugins(discover=False, environ={})


@pytest.fixture
def register_plugin(osprey_host: PluginHost) -> Iterator[PluginRegistrar]:
    """Register plugins on ``osprey_host`` for one test; they are removed at teardown."""
    registrar = PluginRegistrar(osprey_host)
    yield registrar
    registrar.close()
