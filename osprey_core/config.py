"""Configuration: one YAML file plus environment overrides, validated by pydantic.

The root model is assembled at load time from the core settings and every section a
plugin registers, so a typo anywhere (core or plugin) is reported with the file, line,
key path and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from osprey_core.errors import ConfigError
from osprey_core.registry import did_you_mean

if TYPE_CHECKING:
    from osprey_core.plugin_host import PluginHost

DEFAULT_CONFIG_NAME = "osprey.yml"
ENV_PREFIX = "OSPREY__"
SECRET_KEY = re.compile(r"(key|token|password|secret|credential)", re.IGNORECASE)
MASK = "********"


class CoreSettings(BaseModel):
    """Settings owned by the core; plugin sections are added beside these."""

    model_config = ConfigDict(extra="forbid")

    home: Path | None = Field(
        None,
        description="Directory for the database, plans, executions and user memory "
        "(default: $OSPREY_HOME, else $XDG_DATA_HOME/osprey or ~/.local/share/osprey).",
    )


@dataclass
class OspreyConfig:
    """The validated configuration and where each part came from."""

    settings: BaseModel
    path: Path | None
    env_overrides: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        configured = getattr(self.settings, "home", None)
        return Path(configured).expanduser() if configured else default_home()

    def section(self, name: str) -> Any:
        try:
            return getattr(self.settings, name)
        except AttributeError:
            raise ConfigError(f"no config section named '{name}'") from None

    def to_display(self) -> dict[str, Any]:
        """The effective config as plain data, with secrets masked."""
        return _mask(self.settings.model_dump(mode="json"))


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("OSPREY_HOME"):
        return Path(env["OSPREY_HOME"]).expanduser()
    data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "osprey"


def config_model(host: PluginHost | None) -> type[BaseModel]:
    """The root model: core settings plus every plugin section."""
    sections = host.config_sections() if host is not None else {}
    fields: dict[str, Any] = {}
    for name, (model, plugin) in sections.items():
        if name in CoreSettings.model_fields:
            raise ConfigError(f"plugin '{plugin}' registered config section '{name}', "
                              "which is a core setting")
        fields[name] = (model, Field(default_factory=model, description=model.__doc__))
    return create_model("OspreyConfig", __base__=CoreSettings, **fields)


def find_config_path(explicit: Path | None, environ: Mapping[str, str]) -> Path | None:
    """``--config`` wins, then ``OSPREY_CONFIG``, then ``./osprey.yml`` if it exists."""
    if explicit is not None:
        chosen, origin = explicit, "--config"
    elif environ.get("OSPREY_CONFIG"):
        chosen, origin = Path(environ["OSPREY_CONFIG"]), "OSPREY_CONFIG"
    else:
        candidate = Path(DEFAULT_CONFIG_NAME)
        return candidate if candidate.is_file() else None
    if not chosen.is_file():
        raise ConfigError(f"config file {chosen} (from {origin}) does not exist")
    return chosen


def load_config(
    host: PluginHost | None,
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> OspreyConfig:
    env = os.environ if environ is None else environ
    model = config_model(host)
    config_path = find_config_path(path, env)
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    if config_path is not None:
        data, lines = _read_yaml(config_path)
    overrides = _env_overrides(env)
    for env_key, (key_path, value) in overrides.items():
        _set_path(data, key_path, value, env_key)
    try:
        settings = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, model, config_path, lines, overrides)) from None
    return OspreyConfig(settings, config_path, {k: ".".join(p) for k, (p, _) in overrides.items()})


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, "
                          f"not {type(data).__name__}")
    lines: dict[tuple[str, ...], int] = {}
    _index_lines(root, (), lines, path)
    return data, lines


def _index_lines(
    node: yaml.Node, prefix: tuple[str, ...], lines: dict[tuple[str, ...], int], path: Path
) -> None:
    """Record the line of every key and refuse duplicate keys (YAML keeps the last one)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join((*prefix, key))
                raise ConfigError(f"{path}:{line}: duplicate key '{dotted}' "
                                  f"(first defined on line {seen[key]})")
            seen[key] = line
            lines[(*prefix, key)] = line
            _index_lines(value_node, (*prefix, key), lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*prefix, str(index))] = item.start_mark.line + 1
            _index_lines(item, (*prefix, str(index)), lines, path)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, tuple[tuple[str, ...], Any]]:
    """``OSPREY__SECTION__KEY=value`` -> (("section", "key"), parsed value)."""
    overrides: dict[str, tuple[tuple[str, ...], Any]] = {}
    if environ.get("OSPREY_HOME"):
        overrides["OSPREY_HOME"] = (("home",), environ["OSPREY_HOME"])
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = tuple(part.lower() for part in key[len(ENV_PREFIX):].split("__"))
        if not all(parts):
            raise ConfigError(f"environment variable {key}: empty key segment; "
                              "use OSPREY__SECTION__KEY=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        overrides[key] = (parts, value)
    return overrides


def _set_path(data: dict[str, Any], key_path: tuple[str, ...], value: Any, origin: str) -> None:
    target = data
    for depth, part in enumerate(key_path[:-1]):
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            dotted = ".".join(key_path[: depth + 1])
            raise ConfigError(f"environment variable {origin}: '{dotted}' is not a section")
        target = child
    target[key_path[-1]] = value


def _explain(
    exc: ValidationError,
    model: type[BaseModel],
    path: Path | None,
    lines: dict[tuple[str, ...], int],
    overrides: dict[str, tuple[tuple[str, ...], Any]],
) -> str:
    env_by_path = {key_path: env_key for env_key, (key_path, _) in overrides.items()}
    problems = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        dotted = ".".join(loc) or "(top level)"
        where = _where(loc, path, lines, env_by_path)
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            hint = did_you_mean(loc[-1], allowed) or f" (allowed: {', '.join(allowed)})"
            problems.append(f"{where}: {dotted}: unknown key{hint}")
        else:
            got = f" (got {error['input']!r})" if "input" in error and error["type"] != "missing" else ""
            problems.append(f"{where}: {dotted}: {error['msg']}{got}")
    source = str(path) if path else "the configuration"
    return f"invalid configuration in {source}:\n  " + "\n  ".join(problems)


def _where(
    loc: tuple[str, ...],
    path: Path | None,
    lines: dict[tuple[str, ...], int],
    env_by_path: dict[tuple[str, ...], str],
) -> str:
    for length in range(len(loc), 0, -1):
        if (env_key := env_by_path.get(loc[:length])) is not None:
            return f"environment variable {env_key}"
        if (line := lines.get(loc[:length])) is not None and path is not None:
            return f"{path}:{line}"
    return str(path) if path else "defaults"


def _allowed_keys(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        field_info = getattr(current, "model_fields", {}).get(part)
        if field_info is None:
            return []
        current = field_info.annotation
    return sorted(getattr(current, "model_fields", {}))


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(item, key) for item in value]
    if value not in (None, "") and SECRET_KEY.search(key):
        return MASK
    return value


def starter_yaml(host: PluginHost | None) -> str:
    """A commented starter ``osprey.yml`` with every setting at its default."""
    lines = [
        "# osprey-core configuration. Every key below shows its default value.",
        "# Environment overrides: OSPREY__SECTION__KEY=value (e.g. OSPREY__EXAMPLE__UNITS=mm).",
        "",
    ]
    _describe_model(config_model(host), 0, lines)
    return "\n".join(lines) + "\n"


def _describe_model(model: type[BaseModel], indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, info in model.model_fields.items():
        if info.description:
            lines.extend(f"{pad}# {text}" for text in _wrap(info.description, 88 - len(pad)))
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{pad}{name}:")
            _describe_model(annotation, indent + 1, lines)
        else:
            default = info.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            elif isinstance(default, Path):
                default = str(default)
            rendered = yaml.safe_dump({name: default}, default_flow_style=True, width=10_000)
            rendered = rendered.strip()[1:-1]  # drop the flow mapping's braces
            prefix = "# " if default is None else ""
            lines.append(f"{pad}{prefix}{rendered}")
        if indent == 0:
            lines.append("")


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(" ".join(text.split()), width=width) or [""]
