"""Built-in plugin: the ``nsjail`` (isolated, default), ``podman`` (isolated, a container
per run) and ``local`` (no isolation, development only) execution backends.

The backends live in :mod:`osprey_core.sandbox` and are imported when the hook runs, so
loading this plugin stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.execution_backends import ExecutionBackend


@hookimpl
def register_execution_backends(register: Callable[[type[ExecutionBackend]], None]) -> None:
    from osprey_core.sandbox.local_backend import LocalBackend
    from osprey_core.sandbox.nsjail_backend import NsjailBackend
    from osprey_core.sandbox.podman_backend import PodmanBackend

    register(NsjailBackend)
    register(PodmanBackend)
    register(LocalBackend)
