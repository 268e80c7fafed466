"""What the plugin host knows about plugins without calling them: records of loaded
plugins, the registration families, load settings from the environment, the entry
points that provide plugins, and checks of what a plugin contributes beside registries."""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Literal

from osprey_core.errors import ConfigError, DuplicateNameError, RegistryError
from osprey_core.hookspecs import PROJECT_NAME
from osprey_core.hookspecs.approval_policies import ApprovalPolicy
from osprey_core.hookspecs.archivers import ArchiverConnector
from osprey_core.hookspecs.capabilities import Capability
from osprey_core.hookspecs.code_generators import CodeGenerator
from osprey_core.hookspecs.connectors import ControlSystemConnector
from osprey_core.hookspecs.data_providers import DataProvider
from osprey_core.hookspecs.embedding_models import EmbeddingModel
from osprey_core.hookspecs.execution_backends import ExecutionBackend
from osprey_core.hookspecs.logbook_adapters import LogbookAdapter
from osprey_core.hookspecs.services import ServiceSpec
from osprey_core.registry import NAME_PATTERN

if TYPE_CHECKING:
    import typer
    from pydantic import BaseModel


ENTRY_POINT_GROUP = PROJECT_NAME
CORE_DISTRIBUTION = "osprey-core"
#: Built-ins that cannot be blocked: the core's own commands and its safety defaults.
ESSENTIAL_PLUGINS = frozenset({"core_commands", "core_capabilities", "approval_modes"})
#: Hooks that only listen: plugins implementing nothing else may come and go at any time.
OBSERVER_HOOKS = frozenset({"on_run_event", "on_approval_requested", "on_approval_decided"})


class Source(enum.StrEnum):
    BUILTIN = "builtin"
    ENTRY_POINT = "entry point"
    REGISTERED = "registered"


class Status(enum.StrEnum):
    LOADED = "loaded"
    BLOCKED = "blocked"
    FAILED = "failed"


@dataclass
class PluginInfo:
    """What the host knows about one plugin, as shown by ``osprey plugins``."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    source: Source
    status: Status = Status.LOADED
    essential: bool = False
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    #: Failures inside hook calls after loading (non-strict mode keeps going).
    hook_errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        origin = f"{self.distribution} {self.version}" if self.distribution else self.source
        return f"plugin '{self.name}' ({origin})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "source": str(self.source),
            "status": str(self.status),
            "essential": self.essential,
            "hooks": self.hooks,
            "error": self.error,
            "hook_errors": self.hook_errors,
        }


@dataclass(frozen=True, slots=True)
class Family:
    """A registration hook family: which hook fills it and what it accepts."""

    hook: str
    label: str
    kind: type
    expects: Literal["instance", "class"]


FAMILIES: dict[str, Family] = {
    "capabilities": Family("register_capabilities", "capability", Capability, "instance"),
    "data_providers": Family("register_data_providers", "data provider", DataProvider, "instance"),
    "code_generators": Family("register_code_generators", "code generator", CodeGenerator, "class"),
    "execution_backends": Family(
        "register_execution_backends", "execution backend", ExecutionBackend, "class"
    ),
    "connectors": Family("register_connectors", "connector", ControlSystemConnector, "class"),
    "archivers": Family("register_archivers", "archiver", ArchiverConnector, "class"),
    "approval_policies": Family(
        "register_approval_policies", "approval policy", ApprovalPolicy, "instance"
    ),
    "logbook_adapters": Family(
        "register_logbook_adapters", "logbook adapter", LogbookAdapter, "class"
    ),
    "embedding_models": Family(
        "register_embedding_models", "embedding model", EmbeddingModel, "class"
    ),
    "services": Family("register_services", "service", ServiceSpec, "instance"),
}


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """Which entry points to load, read from the environment."""

    allow: frozenset[str] | None
    deny: frozenset[str]
    strict: bool

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LoadSettings:
        allow_raw = environ.get("OSPREY_LOAD_PLUGINS")
        return cls(
            allow=None if allow_raw is None else _name_set(allow_raw),
            deny=_name_set(environ.get("OSPREY_DISABLE_PLUGINS", "")),
            strict=_flag(environ, "OSPREY_STRICT_PLUGINS"),
        )

    def blocks(self, name: str) -> bool:
        return name in self.deny or (self.allow is not None and name not in self.allow)


def _name_set(raw: str) -> frozenset[str]:
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _flag(environ: Mapping[str, str], key: str) -> bool:
    raw = environ.get(key, "").strip().lower()
    if raw in {"", "0", "false", "no", "off"}:
        return False
    if raw in {"1", "true", "yes", "on"}:
        return True
    raise ConfigError(f"environment variable {key}={raw!r}: expected 1/0, true/false or yes/no")


def discover_entry_points() -> list[EntryPoint]:
    seen: set[tuple[str, str]] = set()
    unique = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        # The same distribution can sit twice on sys.path (editable + installed).
        key = (entry_point.name, entry_point.value)
        if key not in seen:
            seen.add(key)
            unique.append(entry_point)
    # Built-ins first: entry points come in sys.path order, and a distribution earlier on
    # the path that reuses a built-in's name must fail itself, not the essential built-in.
    unique.sort(key=lambda entry_point: not _is_core(entry_point))
    return unique


def _is_core(entry_point: EntryPoint) -> bool:
    name, _ = distribution_identity(entry_point)
    return canonical_distribution(name or "") == CORE_DISTRIBUTION


def distribution_identity(entry_point: EntryPoint) -> tuple[str | None, str | None]:
    """Name and version of the distribution behind ``entry_point``."""
    return (None, None) if entry_point.dist is None else _dist_identity(entry_point.dist)


@functools.cache
def _dist_identity(dist: Any) -> tuple[str | None, str | None]:
    # Every read of ``dist.metadata`` parses the whole METADATA file (~0.7 ms); entry
    # points of one distribution share its object, so parse each once.
    metadata = dist.metadata
    return metadata["Name"], metadata["Version"]


def add_config_section(
    sections: dict[str, tuple[type[BaseModel], str]],
    name: str,
    model: type[BaseModel],
    *,
    plugin: str,
) -> None:
    from pydantic import BaseModel

    if not isinstance(name, str) or not NAME_PATTERN.match(name) or "." in name:
        raise RegistryError(f"plugin '{plugin}' registered config section with bad name {name!r}")
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise RegistryError(
            f"plugin '{plugin}' registered config section '{name}' with {model!r}: "
            "expected a pydantic BaseModel subclass"
        )
    if name in sections:
        raise DuplicateNameError(
            f"config section '{name}' is registered twice: by plugin '{sections[name][1]}' "
            f"and by plugin '{plugin}'"
        )
    sections[name] = (model, plugin)


def command_names(app: typer.Typer) -> list[str]:
    """Names of the commands and sub-apps on ``app``, as typed on the command line."""
    names = [info.name or (info.callback.__name__.lower().replace("_", "-")
                           if info.callback else "") for info in app.registered_commands]
    names += [info.name or (info.typer_instance.info.name if info.typer_instance else "") or ""
              for info in app.registered_groups]
    return [name for name in names if name]


def canonical_distribution(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def one_line_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
