"""The plugin host: discovery, isolation, and the one place that calls ``pm.hook``.

Every other module asks the :class:`PluginHost` through typed methods, so how hooks are
called (one implementation at a time, failures attributed to the plugin) is decided here.
"""

from __future__ import annotations

import enum
import functools
import importlib
import logging
import os
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Literal

import pluggy

from osprey_core.errors import ConfigError, DuplicateNameError, PluginError, RegistryError
from osprey_core.hookspecs import PROJECT_NAME, SPEC_MODULES
from osprey_core.hookspecs.approval_policies import ApprovalPolicy
from osprey_core.hookspecs.archivers import ArchiverConnector
from osprey_core.hookspecs.capabilities import Capability
from osprey_core.hookspecs.code_generators import CodeGenerator
from osprey_core.hookspecs.connectors import ControlSystemConnector
from osprey_core.hookspecs.data_providers import DataProvider
from osprey_core.hookspecs.embedding_models import EmbeddingModel
from osprey_core.hookspecs.execution_backends import ExecutionBackend
from osprey_core.hookspecs.logbook_adapters import LogbookAdapter
from osprey_core.hookspecs.observers import ApprovalEvent, RunEvent
from osprey_core.hookspecs.services import ServiceSpec
from osprey_core.registry import NAME_PATTERN, Registry, did_you_mean

if TYPE_CHECKING:
    import typer
    from pydantic import BaseModel

log = logging.getLogger(__name__)

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


def get_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with every osprey hook spec and no plugins loaded."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    for module_name in SPEC_MODULES:
        pm.add_hookspecs(importlib.import_module(f"osprey_core.hookspecs.{module_name}"))
    return pm


def load_plugins(
    pm: pluggy.PluginManager | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    discover: bool = True,
) -> PluginHost:
    """Load the ``osprey`` entry points (built-ins included) into a new :class:`PluginHost`.

    Nothing happens at import time: embedding applications call this when they want
    plugins, or pass ``discover=False`` to register their own set.
    """
    settings = LoadSettings.from_environ(os.environ if environ is None else environ)
    host = PluginHost(pm or get_plugin_manager(), strict=settings.strict)
    if discover:
        for entry_point in _discover_entry_points():
            host.load_entry_point(entry_point, settings)
    host.check_pending()
    return host


def _discover_entry_points() -> list[EntryPoint]:
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
    name, _ = _identity(entry_point)
    return _canonical(name or "") == CORE_DISTRIBUTION


def _identity(entry_point: EntryPoint) -> tuple[str | None, str | None]:
    """Name and version of the distribution behind ``entry_point``."""
    return (None, None) if entry_point.dist is None else _dist_identity(entry_point.dist)


@functools.cache
def _dist_identity(dist: Any) -> tuple[str | None, str | None]:
    # Every read of ``dist.metadata`` parses the whole METADATA file (~0.7 ms); entry
    # points of one distribution share its object, so parse each once.
    metadata = dist.metadata
    return metadata["Name"], metadata["Version"]


class PluginHost:
    """The loaded plugin set and typed access to everything plugins contribute."""

    def __init__(self, pm: pluggy.PluginManager, *, strict: bool = False) -> None:
        self._pm = pm
        self.strict = strict
        self._plugins: dict[str, PluginInfo] = {}
        #: Entry points refused because their name was taken; kept so they are shown.
        self._shadowed: list[PluginInfo] = []
        self._registries: dict[str, Registry[Any]] = {}
        self._config_sections: dict[str, tuple[type[BaseModel], str]] | None = None
        self._frozen = False
        self._refusal_listeners: list[Callable[[str], None]] = []

    # -- loading -----------------------------------------------------------------------

    def load_entry_point(self, entry_point: EntryPoint, settings: LoadSettings) -> PluginInfo:
        dist_name, version = _identity(entry_point)
        builtin = _canonical(dist_name or "") == CORE_DISTRIBUTION
        info = PluginInfo(
            name=entry_point.name,
            module=entry_point.value,
            distribution=dist_name,
            version=version,
            source=Source.BUILTIN if builtin else Source.ENTRY_POINT,
            essential=builtin and entry_point.name in ESSENTIAL_PLUGINS,
        )
        if (taken := self._plugins.get(info.name)) is not None:
            self._shadowed.append(info)
            return self._fail(info, f"the plugin name is already used by {taken.describe()}")
        self._plugins[info.name] = info
        if not info.essential and settings.blocks(info.name):
            info.status = Status.BLOCKED
            return info
        try:
            plugin = entry_point.load()
        except (Exception, SystemExit) as exc:  # a plugin calling sys.exit() must not end us
            return self._fail(info, f"import of '{info.module}' failed: {_oneline(exc)}")
        return self._register(plugin, info)

    def register(self, plugin: object, name: str | None = None) -> PluginInfo:
        """Register an in-process plugin (embedding, tests); failures always raise.

        Once the host is frozen only observers (plugins implementing nothing but
        :data:`OBSERVER_HOOKS`) may be added: anything else would change what runs.
        """
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if name in self._plugins:
            raise PluginError(f"a plugin named '{name}' is already registered")
        info = PluginInfo(name, getattr(plugin, "__name__", repr(plugin)), None, None,
                          Source.REGISTERED)
        self._plugins[name] = info
        strict, self.strict = self.strict, True
        try:
            self._register(plugin, info)
            if self._frozen and not set(info.hooks) <= OBSERVER_HOOKS:
                self._forget(plugin, name)
                self._refuse_change(f"registering plugin '{name}' is refused: the plugin set "
                                    "is frozen once loaded (only observers may be added)")
        except PluginError:
            del self._plugins[name]
            raise
        finally:
            self.strict = strict
        return info

    def unregister(self, name: str) -> None:
        """Remove a plugin. Essential plugins can never be removed, and once the host is
        frozen only observers can; refused attempts raise and are reported."""
        info = self._plugins.get(name)
        if info is not None and info.essential:
            self._refuse_change(f"unregistering plugin '{name}' is refused: it is essential")
        if self._frozen and (info is None or not set(info.hooks) <= OBSERVER_HOOKS):
            self._refuse_change(f"unregistering plugin '{name}' is refused: the plugin set is "
                                "frozen once loaded (only observers may be removed)")
        self._pm.unregister(name=name)
        self._plugins.pop(name, None)
        self._invalidate()

    # -- freezing ----------------------------------------------------------------------

    def freeze(self) -> None:
        """Fix the plugin set before anything runs: every registry is built and sealed, and
        from now on only observers may be registered or removed. Idempotent."""
        if self._frozen:
            return
        for family in FAMILIES:
            self.registry(family).seal()
        self.config_sections()
        self._frozen = True

    @property
    def frozen(self) -> bool:
        return self._frozen

    def on_refused_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(message)`` whenever a change to the plugin set is refused (the
        orchestrator audits it)."""
        self._refusal_listeners.append(listener)

    def _refuse_change(self, message: str) -> typing.NoReturn:
        for listener in self._refusal_listeners:
            try:
                listener(message)
            except Exception:  # a failing audit must not turn the refusal into success
                log.exception("could not report a refused plugin change")
        raise PluginError(message)

    def _register(self, plugin: object, info: PluginInfo) -> PluginInfo:
        if (owner := self._pm.get_name(plugin)) is not None:
            # Two entry points naming one module; unregistering it here would silently
            # strip the hooks of the plugin that registered it first.
            return self._fail(info, f"the same object is already registered as plugin '{owner}'")
        try:
            self._pm.register(plugin, name=info.name)
        except Exception as exc:
            self._forget(plugin, info.name)
            return self._fail(info, _oneline(exc))
        unknown = self._unknown_hooks(plugin)
        if unknown:
            self._forget(plugin, info.name)
            return self._fail(info, "; ".join(unknown))
        info.hooks = sorted(caller.name for caller in self._pm.get_hookcallers(plugin) or ())
        info.status = Status.LOADED
        self._invalidate()
        return info

    def _unknown_hooks(self, plugin: object) -> list[str]:
        known = self.hook_names()
        problems = []
        for caller in self._pm.get_hookcallers(plugin) or ():
            if caller.has_spec():
                continue
            if all(impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin):
                continue
            problems.append(
                f"implements unknown hook '{caller.name}'{did_you_mean(caller.name, known)}"
            )
        return problems

    def _forget(self, plugin: object, name: str) -> None:
        if self._pm.get_name(plugin) == name:
            self._pm.unregister(plugin)

    def _fail(self, info: PluginInfo, message: str) -> PluginInfo:
        info.status = Status.FAILED
        info.error = message
        self._plugins.setdefault(info.name, info)
        text = f"{info.describe()} failed to load: {message}"
        if self.strict or info.essential:
            raise PluginError(text)
        log.warning("%s", text)
        return info

    def check_pending(self) -> None:
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self._pm.get_name(exc.plugin) or repr(exc.plugin)
            raise PluginError(f"plugin '{name}': {exc}") from exc

    def _invalidate(self) -> None:
        if self._frozen:  # only observers come and go now: the registries stay as built
            return
        self._registries.clear()
        self._config_sections = None

    # -- what is loaded ----------------------------------------------------------------

    @property
    def plugins(self) -> list[PluginInfo]:
        return sorted([*self._plugins.values(), *self._shadowed], key=lambda info: info.name)

    def plugin(self, name: str) -> PluginInfo:
        try:
            return self._plugins[name]
        except KeyError:
            raise PluginError(
                f"no plugin named '{name}'{did_you_mean(name, list(self._plugins))}"
            ) from None

    def failures(self) -> list[PluginInfo]:
        return [info for info in self.plugins if info.status is Status.FAILED]

    def hook_names(self) -> list[str]:
        return sorted(
            name for name, caller in vars(self._pm.hook).items()
            if isinstance(caller, pluggy.HookCaller) and caller.has_spec()
        )

    # -- calling hooks -----------------------------------------------------------------

    def _call_each(
        self, hook: str, *, swallow: bool = False, **kwargs: Any
    ) -> Iterator[tuple[str, Any]]:
        """Call each implementation on its own so failures name the plugin.

        Keyword values that are callables of the plugin name (see ``_per_plugin``) are
        resolved per implementation, which is how ``register`` callbacks learn who calls.
        """
        for impl in getattr(self._pm.hook, hook).get_hookimpls():
            args = {
                key: value.bind(impl.plugin_name) if isinstance(value, _PerPlugin) else value
                for key, value in kwargs.items()
                if key in impl.argnames
            }
            try:
                yield impl.plugin_name, impl.function(**args)
            except DuplicateNameError:
                raise
            except (Exception, SystemExit) as exc:  # sys.exit() in a hook must not end us
                self._hook_failed(impl.plugin_name, hook, exc, swallow=swallow)

    def _hook_failed(
        self, plugin: str, hook: str, exc: BaseException, *, swallow: bool
    ) -> None:
        info = self._plugins.get(plugin)
        message = f"{hook}: {_oneline(exc)}"
        if info is not None:
            info.hook_errors.append(message)
        text = f"plugin '{plugin}' failed in {message}"
        if self.strict and not swallow:
            raise PluginError(text) from exc
        log.warning("%s", text, exc_info=exc)

    def registry(self, family: str) -> Registry[Any]:
        """The registry of one family, filled from the plugins on first use."""
        if family not in self._registries:
            spec = FAMILIES[family]
            registry: Registry[Any] = Registry(spec.label, spec.kind, spec.expects)
            for _ in self._call_each(spec.hook, register=_PerPlugin(registry.add)):
                pass
            self._registries[family] = registry
        return self._registries[family]

    def capabilities(self) -> Registry[Capability]:
        return self.registry("capabilities")

    def data_providers(self) -> Registry[DataProvider]:
        return self.registry("data_providers")

    def code_generators(self) -> Registry[type[CodeGenerator]]:
        return self.registry("code_generators")

    def execution_backends(self) -> Registry[type[ExecutionBackend]]:
        return self.registry("execution_backends")

    def connectors(self) -> Registry[type[ControlSystemConnector]]:
        return self.registry("connectors")

    def archivers(self) -> Registry[type[ArchiverConnector]]:
        return self.registry("archivers")

    def approval_policies(self) -> Registry[ApprovalPolicy]:
        return self.registry("approval_policies")

    def logbook_adapters(self) -> Registry[type[LogbookAdapter]]:
        return self.registry("logbook_adapters")

    def embedding_models(self) -> Registry[type[EmbeddingModel]]:
        return self.registry("embedding_models")

    def services(self) -> Registry[ServiceSpec]:
        return self.registry("services")

    def config_sections(self) -> dict[str, tuple[type[BaseModel], str]]:
        """Plugin config sections: name -> (model, plugin that owns it)."""
        if self._config_sections is None:
            sections: dict[str, tuple[type[BaseModel], str]] = {}
            for _ in self._call_each(
                "register_config_sections",
                register=_PerPlugin(functools.partial(_add_config_section, sections)),
            ):
                pass
            self._config_sections = sections
        return self._config_sections

    def add_commands(self, app: typer.Typer) -> None:
        """Let plugins add commands; a name added twice is refused naming both plugins.

        Typer would silently let the later command shadow the earlier one, so a plugin
        could replace, say, ``osprey approvals`` without anyone noticing.
        """
        owners: dict[str, str] = {}
        for plugin, _ in self._call_each("register_commands", app=app):
            names = _command_names(app)
            for name in names:
                if names.count(name) > 1:
                    raise DuplicateNameError(
                        f"command 'osprey {name}' is registered twice: by plugin "
                        f"'{owners.get(name, plugin)}' and by plugin '{plugin}'")
                owners.setdefault(name, plugin)

    def notify_run_event(self, event: RunEvent) -> None:
        for _ in self._call_each("on_run_event", swallow=True, event=event):
            pass

    def notify_approval_requested(self, event: ApprovalEvent) -> None:
        for _ in self._call_each("on_approval_requested", swallow=True, event=event):
            pass

    def notify_approval_decided(self, event: ApprovalEvent) -> None:
        for _ in self._call_each("on_approval_decided", swallow=True, event=event):
            pass


@dataclass(frozen=True, slots=True)
class _PerPlugin:
    """A hook argument bound to the calling plugin's name (``register`` callbacks)."""

    function: Callable[..., Any]

    def bind(self, plugin: str) -> Callable[..., Any]:
        return functools.partial(self.function, plugin=plugin)


def _add_config_section(
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


def _command_names(app: typer.Typer) -> list[str]:
    """Names of the commands and sub-apps on ``app``, as typed on the command line."""
    names = [info.name or (info.callback.__name__.lower().replace("_", "-")
                           if info.callback else "") for info in app.registered_commands]
    names += [info.name or (info.typer_instance.info.name if info.typer_instance else "") or ""
              for info in app.registered_groups]
    return [name for name in names if name]


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PluginView:
    """What plugin code running inside a step may see of the plugin set: the sealed
    registries it needs to look things up, and no way back to the host."""

    __slots__ = ("_code_generators", "_data_providers", "_embedding_models",
                 "_execution_backends", "_logbook_adapters")

    def __init__(self, host: PluginHost) -> None:
        self._code_generators = host.code_generators()
        self._execution_backends = host.execution_backends()
        self._data_providers = host.data_providers()
        self._embedding_models = host.embedding_models()
        self._logbook_adapters = host.logbook_adapters()

    def code_generators(self) -> Registry[type[CodeGenerator]]:
        return self._code_generators

    def execution_backends(self) -> Registry[type[ExecutionBackend]]:
        return self._execution_backends

    def data_providers(self) -> Registry[DataProvider]:
        return self._data_providers

    def embedding_models(self) -> Registry[type[EmbeddingModel]]:
        return self._embedding_models

    def logbook_adapters(self) -> Registry[type[LogbookAdapter]]:
        return self._logbook_adapters
