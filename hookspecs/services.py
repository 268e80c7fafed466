"""Deployable services: containers rendered into the compose file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from osprey_core.hookspecs import hookspec


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A container the deployment can run.

    ``name`` is hierarchical: ``osprey.<service>`` for the framework's own services,
    ``applications.<app>.<service>`` for a facility's.
    """

    name: str
    description: str
    #: Compose template (Jinja2) rendered with the service's config section.
    template: str
    depends_on: tuple[str, ...] = field(default_factory=tuple)


@hookspec
def register_services(register: Callable[[ServiceSpec], None]) -> None:
    """Register deployable services by calling ``register(ServiceSpec(...))`` for each."""
