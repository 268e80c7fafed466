"""The plugin host: discovery, isolation, and the one place that calls ``pm.hook``.

Every other module asks the :class:`PluginHost` through typed methods, so how hooks are
called (one implementation at a time, failures attributed to the plugin) is decided here.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING, Any

import pluggy

from osprey_core.errors import DuplicateNameError, PluginError
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
from osprey_core.plugin_info import (
    CORE_DISTRIBUTION,
    ESSENTIAL_PLUGINS,
    FAMILIES,
    OBSERVER_HOOKS,
    LoadSettings,
    PluginInfo,
    Source,
    Status,
    add_config_section,
    canonical_distribution,
    command_names,
    discover_entry_points,
    distribution_identity,
    one_line_error,
)
from osprey_core.registry import Registry, did_you_mean

if TYPE_CHECKING:
    import typer
    from pydantic import BaseModel

log = logging.getLogger(__name__)

__all__ = [
    "ESSENTIAL_PLUGINS",
    "FAMILIES",
    "LoadSettings",
    "PluginHost",
    "PluginInfo",
    "PluginView",
    "Source",
    "Status",
    "get_plugin_manager",
    "load_plugins",
]


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
        for entry_point in discover_entry_points():
            host.load_entry_point(entry_point, settings)
    host.check_pending()
    return host


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
        dist_name, version = distribution_identity(entry_point)
        builtin = canonical_distribution(dist_name or "") == CORE_DISTRIBUTION
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
            return self._fail(info, f"import of '{info.module}' failed: {one_line_error(exc)}")
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
            return self._fail(info, one_line_error(exc))
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
        message = f"{hook}: {one_line_error(exc)}"
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
                register=_PerPlugin(functools.partial(add_config_section, sections)),
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
            names = command_names(app)
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
