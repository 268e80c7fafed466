"""The ``deploy`` config section and the errors of the deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from osprey_core.errors import OspreyError

#: Container labels every rendered container, volume and network carries.
PROJECT_LABEL = "io.osprey.project"
SERVICE_LABEL = "io.osprey.service"
#: This kind of host lacks CAP_SYS_RESOURCE: containers need both limits set explicitly.
DEFAULT_ULIMITS = ("nofile=1024:1024", "nproc=1024:1024")


class DeployError(OspreyError):
    """Rendering, building or running the deployment failed; the message says where."""


class DeploySettings(BaseModel):
    """Container deployment (osprey deploy): which services, under which project name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field("osprey", pattern=r"^[a-z0-9][a-z0-9_-]*$", description=(
        "Compose project name (-p): labels every container; deploy commands touch only it."))
    deployed_services: list[str] = Field(default_factory=list, description=(
        "Services to deploy, by hierarchical name (osprey.postgresql, "
        "applications.<app>.<service>)."))
    services: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "Settings of each service, by name (validated by the service's own model; "
        "'ports: {name: host_port}' moves a published port)."))
    applications_dir: Path | None = Field(None, description=(
        "Directory of a facility's own services: <app>/<service>/service.yml "
        "(relative to this file)."))
    build_dir: Path | None = Field(None, description=(
        "Where rendered compose files go (default: <home>/deploy/<project>)."))
    bind_address: str = Field("127.0.0.1", description="Address published ports listen on.")
    runtime: Literal["auto", "podman-compose", "podman compose", "docker compose",
                     "docker-compose"] = Field(
        "auto", description="Compose runtime; auto tries podman-compose, podman compose, "
                            "docker compose, docker-compose in that order (the docker ones "
                            "drive docker: images are built with podman, then loaded).")
    ulimits: list[str] = Field(list(DEFAULT_ULIMITS), description=(
        "Default ulimits of every container (private containers.conf)."))
    health_timeout_seconds: float = Field(180.0, gt=0, description=(
        "How long 'up' waits for every health check to pass."))


def relative_to_config(path: Path, config_path: Path | None) -> Path:
    """A configured path, relative to the config file's folder when not absolute."""
    path = path.expanduser()
    if not path.is_absolute() and config_path is not None:
        path = config_path.parent / path
    return path.absolute()
