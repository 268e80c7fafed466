"""Deployable services: containers rendered into compose files (``osprey deploy``).

A service is a plugin: a compose template plus what the renderer needs to know about it
(its config model, published ports, volumes, health check, dependencies and how its image is
built locally). See ``docs/deployment.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from osprey_core.hookspecs import hookspec

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class Port:
    """A container port published on the deployment's bind address (loopback by default).

    The host port is ``host`` unless the service's config sets ``ports.<name>``."""

    name: str
    container: int
    host: int


@dataclass(frozen=True, slots=True)
class Volume:
    """A mount: a project-scoped named volume (``name``) or a host path (``source``, a
    Jinja2 expression rendered like the template, e.g. ``{{ home }}/executions``)."""

    target: str
    name: str | None = None
    source: str | None = None
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """A command run inside the container (exec form); ``osprey deploy up`` runs it itself
    until it succeeds or ``retries`` attempts failed."""

    test: tuple[str, ...]
    interval_seconds: float = 1.0
    timeout_seconds: float = 10.0
    retries: int = 60


@dataclass(frozen=True, slots=True)
class ImageRecipe:
    """How ``osprey deploy build`` makes the image locally (no registry is needed).

    ``containerfile`` is a Jinja2 template whose ``FROM`` names ``{{ base_image }}``: a
    Debian root filesystem made with debootstrap (``base="debian"``) or a busybox one
    (``base="busybox"``). With ``python_packages``, the build sees the prepared sandbox
    interpreter at ``/opt/osprey-python-src`` and wheels of those packages (made by pip on
    the host; ``osprey-core[extras]`` means this osprey's own source) at
    ``/opt/osprey-wheels``; the template gets ``python_prefix``, ``python`` (the
    interpreter), ``python_packages`` and ``wheels_id``, which it must name before
    installing (``ENV OSPREY_WHEELS={{ wheels_id }}``): podman's layer cache does not look
    at mounted files, so without it new wheels would get a layer built from old ones."""

    name: str
    containerfile: str
    base: Literal["debian", "busybox"] = "debian"
    python_packages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A container the deployment can run.

    ``name`` is hierarchical: ``osprey.<service>`` for the framework's and plugins' own
    services, ``applications.<app>.<service>`` for a facility's.
    """

    name: str
    description: str
    #: Compose template (Jinja2, undefined names are errors): the body of the service's
    #: compose entry (command, environment, ...). Image, labels, ports, volumes, health
    #: check, network and dependencies are added by the renderer from the fields below.
    template: str
    depends_on: tuple[str, ...] = field(default_factory=tuple)
    #: Started after these when they are deployed too (``osprey.api`` after
    #: ``osprey.postgresql``), without requiring them.
    after: tuple[str, ...] = ()
    #: The service's own settings (``deploy.services.<name>`` in ``osprey.yml``).
    config_model: type[BaseModel] | None = None
    ports: tuple[Port, ...] = ()
    volumes: tuple[Volume, ...] = ()
    healthcheck: HealthCheck | None = None
    image: ImageRecipe | None = None


@hookspec
def register_services(register: Callable[[ServiceSpec], None]) -> None:
    """Register deployable services by calling ``register(ServiceSpec(...))`` for each."""
