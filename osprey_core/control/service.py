"""Builds the configured control system and archiver from the config and the plugins.

``control_system.type`` names a registered connector class and ``archiver.type`` an
archiver class; both default to the simulated ``mock`` machine, never to a real control
system, and say so on stderr (once per process) when the type was not set explicitly.

A connector whose class declares ``settings_model`` gets the config section named like
it (its plugin registers that section); the timeouts come from ``control_system`` and
``home`` is the osprey home directory. The limits database comes from
``control_system.limits_file`` or the inline ``control_system.limits``; a relative
``limits_file`` is relative to the config file's folder (like ``home``), or to the
working directory when it was set by an environment variable or there is no file.

Audit records of write attempts go to the run store, each in its own durable
transaction: an audited attempt survives a power cut, and a write whose intent cannot
be recorded does not happen (the :class:`ControlSystem` fails closed).

Per-channel write locks live in ``<home>/locks/writes``: every process using this home
on this host takes the same lock files, so their writes to a channel are serialised.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.control.limits import LimitsDatabase
from osprey_core.control.system import AuditSink, ControlSystem
from osprey_core.errors import ConfigError, OspreyError

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig
    from osprey_core.hookspecs.archivers import ArchiverConnector
    from osprey_core.models import AuditRecord
    from osprey_core.plugin_host import PluginHost
    from osprey_core.registry import Registry
    from osprey_core.settings import ControlSystemSettings
    from osprey_core.store import RunStore

Notice = Callable[[str], None]

DEFAULT_TYPE = "mock"
CONTROL_SYSTEM_NOTICE = ("control_system.type is not set: using the simulated 'mock' machine "
                         "(no real control system is contacted)")
ARCHIVER_NOTICE = ("archiver.type is not set: using the history of the simulated 'mock' "
                   "machine (no real archiver is contacted)")
_shown: set[str] = set()
_quiet = {"on": False}


def silence_notices() -> None:
    """No notices on stderr from now on (``osprey --quiet``)."""
    _quiet["on"] = True


def stderr_once(text: str) -> None:
    """Print a notice to stderr, once per process (never after ``silence_notices``)."""
    if text not in _shown and not _quiet["on"]:
        _shown.add(text)
        print(f"Notice: {text}", file=sys.stderr, flush=True)


def default_type_notice(config: OspreyConfig, section: str) -> str | None:
    """The notice to show when ``<section>.type`` fell back to the default, else None."""
    settings = config.section(section)
    if "type" in settings.model_fields_set:
        return None
    return CONTROL_SYSTEM_NOTICE if section == "control_system" else ARCHIVER_NOTICE


def store_audit_sink(store: RunStore) -> AuditSink:
    """Append each record to ``store`` in its own durable (synced) transaction."""

    def append(record: AuditRecord) -> None:
        with store.transaction(durable=True) as transaction:
            transaction.append_audit(record)

    return append


def registered_class(registry: Registry[Any], name: str, section: str) -> Any:
    """The class ``<section>.type`` names, or a ConfigError listing what is registered."""
    if name not in registry:
        known = ", ".join(registry.names()) or "none"
        raise ConfigError(f"{section}.type is '{name}', but no {registry.label} of that name "
                          f"is registered; registered {registry.label}s: {known}")
    return registry.get(name)


def construct(registry: Registry[Any], cls: type[Any], label: str,
              build: Callable[[], Any]) -> Any:
    """``build()``, with any failure that is not already an osprey error named after the
    class and the plugin that registered it."""
    try:
        return build()
    except OspreyError:
        raise
    except Exception as exc:
        plugin = registry.origin(cls.name)
        raise OspreyError(f"{label} '{cls.name}' (plugin '{plugin}') could not be built: "
                          f"{type(exc).__name__}: {exc}") from exc


def plugin_settings(config: OspreyConfig, cls: type[Any]) -> Any:
    """The connector's config section (validated by its plugin), or its defaults when the
    plugin declares a ``settings_model`` without registering a section; else ``None``."""
    from pydantic import ValidationError

    model = getattr(cls, "settings_model", None)
    if model is None:
        return None
    if cls.name in config.sections:
        return config.section(cls.name)
    try:
        return model()
    except ValidationError as exc:
        raise ConfigError(f"'{cls.name}' needs settings ({exc.error_count()} required), but "
                          f"its plugin registers no '{cls.name}' config section") from None


def limits_path(settings: ControlSystemSettings, config: OspreyConfig) -> Path | None:
    """``limits_file`` resolved: relative to the config file unless set from the environment."""
    if settings.limits_file is None:
        return None
    path = Path(settings.limits_file).expanduser()
    from_env = "control_system.limits_file" in config.env_overrides.values()
    if not path.is_absolute() and config.path is not None and not from_env:
        path = config.path.parent / path
    return path.absolute()


def load_limits(settings: ControlSystemSettings, config: OspreyConfig) -> LimitsDatabase:
    path = limits_path(settings, config)
    if path is None:
        return LimitsDatabase(settings.limits)
    if "limits" in settings.model_fields_set:
        raise ConfigError("control_system: set either limits_file or inline limits, not both "
                          f"(limits_file is {path})")
    if not path.is_file():
        raise ConfigError(f"control_system.limits_file {path} does not exist")
    return LimitsDatabase.load(path)


def build_control_system(config: OspreyConfig, host: PluginHost, *,
                         audit: AuditSink | None = None,
                         notice: Notice | None = stderr_once) -> ControlSystem:
    """The configured connector behind the one write path (not connected yet)."""
    settings: ControlSystemSettings = config.section("control_system")
    registry = host.connectors()
    cls = registered_class(registry, settings.type, "control_system")
    limits = load_limits(settings, config)
    connector_settings = plugin_settings(config, cls)
    connector = construct(registry, cls, "connector", lambda: cls(
        connector_settings, connection_timeout=settings.connection_timeout,
        read_timeout=settings.read_timeout, write_timeout=settings.write_timeout,
        home=config.home))
    if notice is not None and (text := default_type_notice(config, "control_system")):
        notice(text)
    return ControlSystem(connector, limits, writes_enabled=settings.writes_enabled,
                         verify_timeout=settings.verify_timeout, audit=audit,
                         lock_dir=write_lock_dir(config))


def write_lock_dir(config: OspreyConfig) -> Path:
    """Where the per-channel write locks of this osprey home live."""
    return config.home / "locks" / "writes"


def build_archiver(config: OspreyConfig, host: PluginHost, *,
                   notice: Notice | None = stderr_once) -> ArchiverConnector:
    """The configured archiver connector."""
    settings = config.section("archiver")
    registry = host.archivers()
    cls = registered_class(registry, settings.type, "archiver")
    archiver_settings = plugin_settings(config, cls)
    archiver = construct(registry, cls, "archiver", lambda: cls(
        archiver_settings, timeout=settings.timeout, home=config.home))
    if notice is not None and (text := default_type_notice(config, "archiver")):
        notice(text)
    return archiver
