"""Which services exist (plugins and the applications folder), which are deployed, their
validated settings, and the order they start in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from osprey_core.deploy.settings import DeployError, DeploySettings, relative_to_config
from osprey_core.errors import ConfigError
from osprey_core.hookspecs.services import ServiceSpec
from osprey_core.registry import did_you_mean

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig
    from osprey_core.plugin_host import PluginHost

SECTION = "deploy"


@dataclass(frozen=True)
class Selected:
    """One deployed service: its spec, where it came from and its validated settings."""

    spec: ServiceSpec
    origin: str
    config: dict[str, Any]
    host_ports: dict[str, int]

    @property
    def compose_name(self) -> str:
        return compose_name(self.spec.name)

    def needs(self, deployed: set[str] | dict[str, Selected]) -> list[str]:
        """What starts before this service: its dependencies and deployed ``after``s."""
        return [*self.spec.depends_on,
                *sorted(name for name in self.spec.after if name in deployed)]


def compose_name(name: str) -> str:
    """The compose service (and DNS) name: ``osprey.api`` -> ``osprey-api``."""
    return name.replace(".", "-")


@dataclass(frozen=True)
class Deployment:
    """Everything rendering and running needs, resolved from the configuration."""

    settings: DeploySettings
    build_dir: Path
    home: Path
    #: In dependency order (a service after everything it depends on; ties by name).
    services: list[Selected]
    catalog: dict[str, tuple[ServiceSpec, str]] = field(default_factory=dict)

    @property
    def project(self) -> str:
        return self.settings.project


def catalog(host: PluginHost, settings: DeploySettings,
            config_path: Path | None) -> dict[str, tuple[ServiceSpec, str]]:
    """Every known service by name, with its origin (plugin name or folder)."""
    known = {entry.name: (entry.item, f"plugin {entry.plugin}")
             for entry in host.services().entries()}
    if settings.applications_dir is not None:
        from osprey_core.deploy.applications import load_applications

        root = relative_to_config(settings.applications_dir, config_path)
        for spec, folder in load_applications(root):
            if spec.name in known:
                raise DeployError(f"service '{spec.name}' is defined twice: by "
                                  f"{known[spec.name][1]} and by {folder}")
            known[spec.name] = (spec, str(folder))
    return known


def plan(config: OspreyConfig, host: PluginHost) -> Deployment:
    """Resolve ``deploy:`` into a :class:`Deployment`; ConfigError names file and line."""
    settings: DeploySettings = config.section(SECTION)
    known = catalog(host, settings, config.path)
    problems: list[tuple[tuple[Any, ...], str]] = []
    names = sorted(known)
    listing = ", ".join(names) or "none"
    for index, name in enumerate(settings.deployed_services):
        if name not in known:
            problems.append(((SECTION, "deployed_services", index),
                             f"no service named {name!r}{did_you_mean(name, names)}; "
                             f"known: {listing}"))
    for name in settings.services:
        if name not in known:
            problems.append(((SECTION, "services", name),
                             f"no service named {name!r}{did_you_mean(name, names)}; "
                             f"known: {listing}"))
    selected: dict[str, Selected] = {}
    # settings of a service that is not deployed are checked too: a typo shows up now
    for name in dict.fromkeys([*settings.deployed_services, *settings.services]):
        if name in known:
            spec, origin = known[name]
            entry = _settings_of(spec, origin, settings.services.get(name, {}), problems)
            if entry is not None and name in settings.deployed_services:
                selected[name] = entry
    if problems:
        from osprey_core.config.loading import describe_problems

        raise ConfigError(describe_problems(config, problems))
    build_dir = (relative_to_config(settings.build_dir, config.path) if settings.build_dir
                 else config.home / "deploy" / settings.project)
    return Deployment(settings, build_dir, config.home, dependency_order(selected), known)


def _settings_of(spec: ServiceSpec, origin: str, raw: dict[str, Any],
                 problems: list[tuple[tuple[Any, ...], str]]) -> Selected | None:
    loc = (SECTION, "services", spec.name)
    values = dict(raw)
    ports = {port.name: port.host for port in spec.ports}
    moved = values.pop("ports", {}) or {}
    if not isinstance(moved, dict):
        problems.append(((*loc, "ports"), "expected a mapping of port name to host port"))
        moved = {}
    for port_name, host_port in moved.items():
        if port_name not in ports:
            problems.append(((*loc, "ports", port_name), f"no port named {port_name!r}; "
                             f"ports: {', '.join(ports) or 'none'}"))
        elif not isinstance(host_port, int) or not 1 <= host_port <= 65535:
            problems.append(((*loc, "ports", port_name),
                             f"expected a port number 1-65535, got {host_port!r}"))
        else:
            ports[port_name] = host_port
    if spec.config_model is None:
        if values:
            problems.append((loc, f"service {spec.name} takes no settings besides ports"))
        return Selected(spec, origin, {}, ports)
    try:
        model = spec.config_model.model_validate(values)
    except ValidationError as exc:
        problems.extend(((*loc, *map(str, error["loc"])), error["msg"])
                        for error in exc.errors())
        return None
    return Selected(spec, origin, model.model_dump(), ports)


def dependency_order(selected: dict[str, Selected]) -> list[Selected]:
    """Dependencies first, ties by name; a missing dependency or a cycle is an error."""
    for name, entry in selected.items():
        for needed in entry.spec.depends_on:
            if needed not in selected:
                raise DeployError(f"service {name} depends on {needed}, which is not deployed: "
                                  f"add it to deploy.deployed_services")
    ordered: list[Selected] = []
    placed: set[str] = set()
    while len(ordered) < len(selected):
        ready = sorted(name for name, entry in selected.items() if name not in placed
                       and set(entry.needs(selected)) <= placed)
        if not ready:
            stuck = sorted(set(selected) - placed)
            raise DeployError(f"services depend on each other in a cycle: {', '.join(stuck)}")
        ordered.append(selected[ready[0]])
        placed.add(ready[0])
    return ordered
