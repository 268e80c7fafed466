"""The root settings model (core settings plus every plugin section) and the validated
configuration with where each part came from."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import create_model as _create_model

from osprey_core.config.display import mask, plain_value
from osprey_core.errors import ConfigError
from osprey_core.registry import did_you_mean
from osprey_core.service.settings import ServiceSettings
from osprey_core.settings import (
    ApprovalSettings,
    ArchiverSettings,
    ControlSystemSettings,
    ExecutionSettings,
    LLMSettings,
    LogbookSettings,
    MemorySettings,
    PlanningSettings,
    ProvidersSettings,
)
from osprey_core.stores.settings import StoreSettings

if TYPE_CHECKING:

    from osprey_core.plugin_host import PluginHost


class CoreSettings(BaseModel):
    """Settings owned by the core; plugin sections are added beside these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path | None = Field(
        None,
        description="Directory for the database, plans, executions and user memory "
        "(default: $OSPREY_HOME, else $XDG_DATA_HOME/osprey or ~/.local/share/osprey). "
        "A relative path is relative to this file.",
    )
    llm: LLMSettings = Field(default_factory=LLMSettings, description=LLMSettings.__doc__)
    planning: PlanningSettings = Field(
        default_factory=PlanningSettings, description=PlanningSettings.__doc__)
    approval: ApprovalSettings = Field(
        default_factory=ApprovalSettings, description=ApprovalSettings.__doc__)
    control_system: ControlSystemSettings = Field(
        default_factory=ControlSystemSettings, description=ControlSystemSettings.__doc__)
    archiver: ArchiverSettings = Field(
        default_factory=ArchiverSettings, description=ArchiverSettings.__doc__)
    execution: ExecutionSettings = Field(
        default_factory=ExecutionSettings, description=ExecutionSettings.__doc__)
    providers: ProvidersSettings = Field(
        default_factory=ProvidersSettings, description=ProvidersSettings.__doc__)
    memory: MemorySettings = Field(
        default_factory=MemorySettings, description=MemorySettings.__doc__)
    logbook: LogbookSettings = Field(
        default_factory=LogbookSettings, description=LogbookSettings.__doc__)
    service: ServiceSettings = Field(
        default_factory=ServiceSettings, description=ServiceSettings.__doc__)
    store: StoreSettings = Field(
        default_factory=StoreSettings, description=StoreSettings.__doc__)


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("OSPREY_HOME"):
        return Path(env["OSPREY_HOME"]).expanduser()
    data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "osprey"


@dataclass
class OspreyConfig:
    """The validated configuration and where each part came from."""

    settings: BaseModel
    path: Path | None = None
    #: environment variable -> dotted key it overrode
    env_overrides: dict[str, str] = field(default_factory=dict)
    #: plugin section -> plugin that registered it
    sections: dict[str, str] = field(default_factory=dict)
    #: home when the config sets none; resolved from the environment given to load_config
    fallback_home: Path = field(default_factory=default_home, repr=False)

    @property
    def home(self) -> Path:
        """Absolute home directory; a relative ``home:`` in the file is relative to the file."""
        configured = getattr(self.settings, "home", None)
        if configured is None:
            return self.fallback_home.absolute()
        home = Path(configured).expanduser()
        if not home.is_absolute() and self.path and "home" not in self.env_overrides.values():
            home = self.path.parent / home
        return home.absolute()

    def section(self, name: str) -> Any:
        """The validated model of a section (core or plugin)."""
        names = [key for key in type(self.settings).model_fields if key != "home"]
        if name not in names:
            known = ", ".join(names) or "none"
            raise ConfigError(
                f"no config section named '{name}'{did_you_mean(name, names)}; sections: {known}"
            )
        return getattr(self.settings, name)

    def to_display(self) -> dict[str, Any]:
        """The effective config as plain JSON-able data, secrets masked, home resolved."""
        data = mask(plain_value(self.settings.model_dump(by_alias=True)))
        data["home"] = str(self.home)
        return data


CORE_KEYS = frozenset(CoreSettings.model_fields)


def config_model(host: PluginHost | None) -> type[BaseModel]:
    """The root model: core settings plus every plugin section."""
    sections = host.config_sections() if host is not None else {}
    fields: dict[str, Any] = {}
    for name, (model, plugin) in sections.items():
        if name in CORE_KEYS:
            raise ConfigError(
                f"plugin '{plugin}' registered config section '{name}', which is a core setting"
            )
        # A section whose model has required keys must be written; otherwise it may be omitted.
        required = any(info.is_required() for info in model.model_fields.values())
        default = Field(...) if required else Field(default_factory=model)
        fields[name] = (model, default)
    return _create_model("OspreyConfig", __base__=CoreSettings, **fields)
