"""Finding the file, reading it with each key's line, environment overrides, validation."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from osprey_core.config.annotations import child_type, is_text, model_of, type_at
from osprey_core.config.model import OspreyConfig, config_model, default_home
from osprey_core.config.problems import dotted_path, explain, report, strict_problems
from osprey_core.errors import ConfigError

if TYPE_CHECKING:

    from osprey_core.plugin_host import PluginHost


DEFAULT_CONFIG_NAME = "osprey.yml"
ENV_PREFIX = "OSPREY__"
# Every key in osprey.yml must be declared, even in a plugin model that forgot
# ``extra="forbid"``; a plugin wanting free-form keys declares a ``dict`` field.
# (pydantic added this per-call override in late 2025; older versions honour each model's.)
_VALIDATE_OPTIONS: dict[str, Any] = (
    {"extra": "forbid"} if "extra" in inspect.signature(BaseModel.model_validate).parameters
    else {}
)

def find_config_path(explicit: Path | None, environ: Mapping[str, str]) -> Path | None:
    """``--config`` wins, then ``OSPREY_CONFIG``, then ``./osprey.yml`` if it exists."""
    if explicit is not None:
        chosen, origin = explicit, "--config"
    elif environ.get("OSPREY_CONFIG"):
        chosen, origin = Path(environ["OSPREY_CONFIG"]), "OSPREY_CONFIG"
    else:
        candidate = Path(DEFAULT_CONFIG_NAME)
        return candidate if candidate.is_file() else None
    if not chosen.exists():
        raise ConfigError(f"config file {chosen} (from {origin}) does not exist")
    if not chosen.is_file():
        raise ConfigError(f"config file {chosen} (from {origin}) is not a file")
    return chosen


def init_target(explicit: Path | None, environ: Mapping[str, str]) -> Path:
    """Where ``osprey config init`` writes: the file later commands would read."""
    if explicit is not None:
        return explicit
    return Path(environ.get("OSPREY_CONFIG") or DEFAULT_CONFIG_NAME)


def load_config(
    host: PluginHost | None,
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> OspreyConfig:
    """Read the file (if any), apply environment overrides, validate; ConfigError if bad."""
    env = os.environ if environ is None else environ
    model = config_model(host)
    config_path = find_config_path(path, env)
    data: dict[Any, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    if config_path is not None:
        data, lines = _read_yaml(config_path)
    _drop_empty_sections(data, model)
    overrides = _env_overrides(env, model)
    for env_key, (key_path, value) in overrides.items():
        _set_path(data, key_path, value, env_key)
    if problems := strict_problems(data, model, host):
        raise ConfigError(report(problems, config_path, lines, overrides))
    try:
        settings = model.model_validate(data, **_VALIDATE_OPTIONS)
    except ValidationError as exc:
        raise ConfigError(explain(exc, model, config_path, lines, overrides)) from None
    return OspreyConfig(
        settings,
        config_path,
        env_overrides={key: ".".join(key_path) for key, (key_path, _) in overrides.items()},
        sections={name: plugin for name, (_, plugin) in
                  (host.config_sections() if host else {}).items()},
        fallback_home=default_home(env),
    )


def describe_problems(config: OspreyConfig, problems: list[tuple[tuple[Any, ...], str]]) -> str:
    """Problems a plugin found in its part of a loaded config, in the loader's own format
    (``FILE:LINE: key.path: problem``, or the environment variable that set the key), so
    checks made after loading read like the loader's."""
    lines = _read_yaml(config.path)[1] if config.path is not None else {}
    overrides = {env: (tuple(dotted.split(".")), None)
                 for env, dotted in config.env_overrides.items()}
    return report(problems, config.path, lines, overrides)


# -- reading -------------------------------------------------------------------------------


def _read_yaml(path: Path) -> tuple[dict[Any, Any], dict[tuple[str, ...], int]]:
    """Parse once: index key lines on the node tree, then construct the data."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    from osprey_core.yamlio import BoundedLoader

    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            return {}, {}
        if not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else f"the value {node.value!r}"
            raise ConfigError(f"{path}:{node.start_mark.line + 1}: the top level must be a "
                              f"mapping of sections (key: value), not {kind}")
        lines: dict[tuple[str, ...], int] = {}
        _index_lines(node, (), lines, path, set())  # before construction flattens merge keys
        return loader.construct_document(node), lines
    except yaml.YAMLError as exc:
        from osprey_core.yamlio import describe_error

        where, _, problem = describe_error(exc, path).partition(": ")
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()


def _index_lines(
    node: yaml.Node,
    prefix: tuple[str, ...],
    lines: dict[tuple[str, ...], int],
    path: Path,
    done: set[int],
    active: frozenset[int] = frozenset(),
) -> None:
    """Record the line of every key; refuse duplicate keys (YAML silently keeps the last).

    An alias repeats a collection already indexed (``done``); an alias inside its own
    anchor (``active``) would make the data infinitely deep, so it is refused.
    """
    if not isinstance(node, yaml.CollectionNode):
        return
    if id(node) in active:
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: '{dotted_path(prefix)}' "
                          "refers to itself through a YAML alias")
    if id(node) in done:
        return
    done.add(id(node))
    active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag.endswith(":merge"):
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{path}:{line}: a key must be a plain name, "
                                  "not a list or mapping")
            key = key_node.value
            if key_node.tag.endswith((":bool", ":null")):
                kind = "true/false" if key_node.tag.endswith(":bool") else "null"
                raise ConfigError(f"{path}:{line}: key {key!r} reads as {kind} in YAML; "
                                  f"quote it: '{key}':")
            if key in first_line:
                raise ConfigError(f"{path}:{line}: duplicate key '{dotted_path((*prefix, key))}' "
                                  f"(first defined on line {first_line[key]})")
            first_line[key] = line
            lines[(*prefix, key)] = line
            _index_lines(value_node, (*prefix, key), lines, path, done, active)
    else:
        for index, item in enumerate(node.value):
            lines[(*prefix, str(index))] = item.start_mark.line + 1
            _index_lines(item, (*prefix, str(index)), lines, path, done, active)


def _drop_empty_sections(data: dict[Any, Any], model: type[BaseModel]) -> None:
    """``section:`` with every key commented out is null in YAML: it means "all defaults"."""
    for key, value in list(data.items()):
        sub = model_of(child_type(model, str(key)), optional=False)
        if sub is None:
            continue
        if value is None:
            del data[key]
        elif isinstance(value, dict):
            _drop_empty_sections(value, sub)


def _env_overrides(
    environ: Mapping[str, str], model: type[BaseModel]
) -> dict[str, tuple[tuple[str, ...], Any]]:
    """``OSPREY__SECTION__KEY=value`` -> (("section", "key"), value typed for the field)."""
    overrides: dict[str, tuple[tuple[str, ...], Any]] = {}
    if environ.get("OSPREY_HOME"):
        overrides["OSPREY_HOME"] = (("home",), environ["OSPREY_HOME"])
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX):
            continue
        parts = tuple(part.lower() for part in key[len(ENV_PREFIX):].split("__"))
        if not all(parts):
            raise ConfigError(f"environment variable {key}: empty key segment; "
                              "use OSPREY__SECTION__KEY=value")
        overrides[key] = (parts, _env_value(environ[key], type_at(model, parts)))
    return overrides


def _env_value(raw: str, annotation: Any) -> Any:
    """Text fields take the value verbatim, so a token ``0123`` or a password with ``#``
    survives; everything else is parsed as YAML, as in the file (``8080``, ``[a, b]``)."""
    if not raw.strip() or is_text(annotation):
        return raw
    from osprey_core.yamlio import safe_load

    try:
        return safe_load(raw)
    except yaml.YAMLError:
        return raw


def _set_path(data: dict[Any, Any], key_path: tuple[str, ...], value: Any, origin: str) -> None:
    target = data
    for depth, part in enumerate(key_path[:-1]):
        child = target.setdefault(part, {})
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"environment variable {origin}: "
                              f"'{dotted_path(key_path[: depth + 1])}' is not a section")
        target = child
    target[key_path[-1]] = value
