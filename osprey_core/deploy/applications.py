"""A facility's own services: ``<applications_dir>/<app>/<service>/service.yml``.

Each becomes a :class:`ServiceSpec` named ``applications.<app>.<service>``; its ``config:``
defaults become its config model (types taken from the defaults), so an unknown or
mistyped setting is refused like any other."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from osprey_core.deploy.settings import DeployError
from osprey_core.hookspecs.services import HealthCheck, ImageRecipe, Port, ServiceSpec, Volume
from osprey_core.registry import NAME_PATTERN

SERVICE_FILE = "service.yml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Port(_Strict):
    name: str
    container: int = Field(ge=1, le=65535)
    host: int = Field(ge=1, le=65535)


class _Volume(_Strict):
    target: str
    name: str | None = None
    source: str | None = None
    read_only: bool = False


class _Health(_Strict):
    test: list[str] = Field(min_length=1)
    interval_seconds: float = Field(1.0, gt=0)
    timeout_seconds: float = Field(10.0, gt=0)
    retries: int = Field(60, ge=1)


class _Image(_Strict):
    name: str
    containerfile: str = "Containerfile"
    base: Literal["debian", "busybox"] = "debian"


class ServiceFile(_Strict):
    """What ``service.yml`` may say."""

    description: str
    template: str = "compose.yml.j2"
    depends_on: list[str] = Field(default_factory=list)
    ports: list[_Port] = Field(default_factory=list)
    volumes: list[_Volume] = Field(default_factory=list)
    healthcheck: _Health | None = None
    image: _Image | None = None
    config: dict[str, Any] = Field(default_factory=dict)


def load_applications(root: Path) -> list[tuple[ServiceSpec, Path]]:
    """Every service under ``root``, sorted by name, with the folder it came from."""
    if not root.is_dir():
        raise DeployError(f"deploy.applications_dir {root} is not a directory")
    found = []
    for service_file in sorted(root.glob(f"*/*/{SERVICE_FILE}")):
        folder = service_file.parent
        name = f"applications.{folder.parent.name}.{folder.name}"
        if not NAME_PATTERN.match(name):
            raise DeployError(f"{folder}: '{name}' is not a valid service name (lower-case "
                              "letters, digits, '_' and '-')")
        found.append((_spec(name, folder, service_file), folder))
    return found


def _spec(name: str, folder: Path, service_file: Path) -> ServiceSpec:
    import yaml

    from osprey_core.yamlio import safe_load

    try:
        data = safe_load(service_file.read_text(encoding="utf-8")) or {}
        parsed = ServiceFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}"
                             for e in exc.errors())
        raise DeployError(f"{service_file}: {problems}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DeployError(f"{service_file}: cannot read: {exc}") from None
    image = None
    if parsed.image is not None:
        image = ImageRecipe(parsed.image.name, _read(folder, parsed.image.containerfile),
                            base=parsed.image.base)
    health = parsed.healthcheck
    return ServiceSpec(
        name=name, description=parsed.description,
        template=_read(folder, parsed.template), depends_on=tuple(parsed.depends_on),
        config_model=_config_model(name, parsed.config),
        ports=tuple(Port(p.name, p.container, p.host) for p in parsed.ports),
        volumes=tuple(Volume(v.target, v.name, v.source, v.read_only) for v in parsed.volumes),
        healthcheck=None if health is None else HealthCheck(
            tuple(health.test), health.interval_seconds, health.timeout_seconds,
            health.retries),
        image=image)


def _read(folder: Path, relative: str) -> str:
    path = folder / relative
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeployError(f"{path}: cannot read ({exc.strerror})") from None


def _config_model(name: str, defaults: dict[str, Any]) -> type[BaseModel]:
    fields: dict[str, Any] = {key: (type(value) if value is not None else Any, value)
                              for key, value in defaults.items()}
    return create_model(f"Config_{name.replace('.', '_').replace('-', '_')}",
                        __config__=ConfigDict(extra="forbid", frozen=True), **fields)
