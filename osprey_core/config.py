"""Configuration: one YAML file plus environment overrides, validated by pydantic.

The root model is assembled at load time from the core settings and every section a
plugin registers, so a typo anywhere (core or plugin) is reported with the file, line,
key path and what was expected.
"""

from __future__ import annotations

import inspect
import os
import re
import reprlib
import textwrap
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretBytes, SecretStr, ValidationError
from pydantic import create_model as _create_model
from pydantic_core import to_jsonable_python

from osprey_core.errors import ConfigError
from osprey_core.registry import did_you_mean
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

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from osprey_core.plugin_host import PluginHost

DEFAULT_CONFIG_NAME = "osprey.yml"
ENV_PREFIX = "OSPREY__"
MASK = "********"
# The last word of a key that holds a secret. Not "tokens": ``max_tokens`` is an LLM limit.
SECRET_WORDS = frozenset({
    "password", "passwords", "passwd", "passphrase", "secret", "secrets",
    "token", "key", "keys", "apikey", "credential", "credentials",
})
# Every key in osprey.yml must be declared, even in a plugin model that forgot
# ``extra="forbid"``; a plugin wanting free-form keys declares a ``dict`` field.
# (pydantic added this per-call override in late 2025; older versions honour each model's.)
_VALIDATE_OPTIONS: dict[str, Any] = (
    {"extra": "forbid"} if "extra" in inspect.signature(BaseModel.model_validate).parameters
    else {}
)


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
        data = _mask(_plain(self.settings.model_dump(by_alias=True)))
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
    if problems := _strict_problems(data, model, host):
        raise ConfigError(_report(problems, config_path, lines, overrides))
    try:
        settings = model.model_validate(data, **_VALIDATE_OPTIONS)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, model, config_path, lines, overrides)) from None
    return OspreyConfig(
        settings,
        config_path,
        env_overrides={key: ".".join(key_path) for key, (key_path, _) in overrides.items()},
        sections={name: plugin for name, (_, plugin) in
                  (host.config_sections() if host else {}).items()},
        fallback_home=default_home(env),
    )


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
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: '{_dotted(prefix)}' "
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
                raise ConfigError(f"{path}:{line}: duplicate key '{_dotted((*prefix, key))}' "
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
        sub = _model_of(_child_type(model, str(key)), optional=False)
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
        overrides[key] = (parts, _env_value(environ[key], _type_at(model, parts)))
    return overrides


def _env_value(raw: str, annotation: Any) -> Any:
    """Text fields take the value verbatim, so a token ``0123`` or a password with ``#``
    survives; everything else is parsed as YAML, as in the file (``8080``, ``[a, b]``)."""
    if not raw.strip() or _is_text(annotation):
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
                              f"'{_dotted(key_path[: depth + 1])}' is not a section")
        target = child
    target[key_path[-1]] = value


# -- walking the model ---------------------------------------------------------------------


def _options(annotation: Any) -> tuple[Any, ...]:
    """The members of a union (``X | None`` -> X, None), unwrapping ``Annotated``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _options(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return tuple(option for arg in get_args(annotation) for option in _options(arg))
    return (annotation,)


def _model_of(annotation: Any, *, optional: bool = True) -> type[BaseModel] | None:
    """The model behind ``Model`` (or ``Model | None`` when ``optional``), else None."""
    options = _options(annotation) if optional else (annotation,)
    for option in options:
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """Fields by the key written in YAML (the alias, if any)."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _child_type(annotation: Any, key: str) -> Any:
    """The annotation one step down ``key``: a model field, a list index or a dict value."""
    for option in _options(annotation):
        if (model := _model_of(option)) is not None:
            if (info := _fields(model).get(key)) is not None:
                return info.annotation
            continue
        origin, args = get_origin(option), get_args(option)
        if origin in (list, tuple, set, frozenset) and args and key.isdigit():
            return args[0]
        if origin is dict and len(args) == 2:
            return args[1]
    return None


def _type_at(model: type[BaseModel], key_path: tuple[str, ...]) -> Any:
    annotation: Any = model
    for key in key_path:
        annotation = _child_type(annotation, key)
        if annotation is None:
            return None
    return annotation


def _is_text(annotation: Any) -> bool:
    options = [option for option in _options(annotation) if option is not type(None)]
    if not options:
        return False
    for option in options:
        if get_origin(option) is Literal:
            if not all(isinstance(value, str) for value in get_args(option)):
                return False
        elif not (isinstance(option, type) and issubclass(option, (str, PurePath, SecretStr))):
            return False
    return True


def _type_name(annotation: Any) -> str:
    """A type as an operator reads it: ``int``, ``str | null``, ``'mm' | 'cm'``."""
    options = _options(annotation)
    if len(options) > 1:
        return " | ".join(_type_name(option) for option in options)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(value) for value in args)
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else _type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', origin)}[{inner}]"
    if annotation is type(None):
        return "null"
    if _model_of(annotation) is not None:
        return "a mapping of keys"
    if annotation in (SecretStr, SecretBytes):
        return "str"
    return getattr(annotation, "__name__", str(annotation))


# -- explaining errors ---------------------------------------------------------------------


def _explain(
    exc: ValidationError,
    model: type[BaseModel],
    path: Path | None,
    lines: dict[tuple[str, ...], int],
    overrides: dict[str, tuple[tuple[str, ...], Any]],
) -> str:
    problems = [(tuple(error["loc"]), _problem(error, tuple(map(str, error["loc"])), model))
                for error in exc.errors()]
    return _report(problems, path, lines, overrides)


def _report(
    problems: list[tuple[tuple[Any, ...], str]],
    path: Path | None,
    lines: dict[tuple[str, ...], int],
    overrides: dict[str, tuple[tuple[str, ...], Any]],
) -> str:
    """``invalid configuration in FILE:`` and one ``where: key: problem`` line each."""
    env_by_path = {key_path: env_key for env_key, (key_path, _) in overrides.items()}
    rendered = [f"{_where(tuple(map(str, loc)), path, lines, env_by_path)}: "
                f"{_dotted(loc) or '(top level)'}: {problem}" for loc, problem in problems]
    source = str(path) if path else "the configuration"
    return f"invalid configuration in {source}:\n  " + "\n  ".join(rendered)


# -- rules pydantic's lax mode would let through -------------------------------------------


def _strict_problems(
    data: Any, model: type[BaseModel], host: PluginHost | None,
) -> list[tuple[tuple[Any, ...], str]]:
    """Values that validation would accept but must not be.

    * A ``bool`` setting takes only ``true`` or ``false``: pydantic turns ``"yes"``,
      ``"on"`` and ``1`` into ``True``, and a safety switch must never guess.
    * A value marked with :class:`~osprey_core.settings.PluginChoice` must name a
      registered plugin, so a typo is reported with its line now, not at first use.
      (Unchecked when no plugin of that family is loaded: nothing could be named then.)
    """
    from osprey_core.settings import PluginChoice

    problems: list[tuple[tuple[Any, ...], str]] = []
    for loc, value, info in _set_fields(data, model, ()):
        options = _options(info.annotation)
        if bool in options and not isinstance(value, bool) and not (
                value is None and type(None) in options) and len(options) <= 2:
            problems.append((loc, f"expected true or false, got {_REPR.repr(value)} "
                                  "(a switch takes only true or false)"))
        for choice in (item for item in info.metadata if isinstance(item, PluginChoice)):
            if host is None:
                continue
            registry = host.registry(choice.family)
            if not len(registry):
                continue
            names = list(value) if choice.keys and isinstance(value, dict) else [value]
            for name in names:
                if not isinstance(name, str) or name in registry or name in choice.also:
                    continue
                known = ", ".join([*choice.also, *registry.names()]) or "none"
                problems.append(((*loc, name) if choice.keys else loc,
                                 f"no {registry.label} named {_REPR.repr(name)}"
                                 f"{did_you_mean(name, registry.names())}; registered: {known}"))
    return problems


def _set_fields(data: Any, annotation: Any,
                prefix: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any, FieldInfo]]:
    """Every model field the data sets, with its key path and field info, at any depth
    (through nested models, lists and mappings of models)."""
    for option in _options(annotation):
        if (model := _model_of(option)) is not None and isinstance(data, dict):
            fields = _fields(model)
            for key, value in data.items():
                if (info := fields.get(str(key))) is not None:
                    loc = (*prefix, str(key))
                    yield loc, value, info
                    yield from _set_fields(value, info.annotation, loc)
            return
        origin, args = get_origin(option), get_args(option)
        if origin is dict and len(args) == 2 and isinstance(data, dict):
            for key, value in data.items():
                yield from _set_fields(value, args[1], (*prefix, str(key)))
            return
        if origin in (list, tuple) and args and isinstance(data, list):
            for index, value in enumerate(data):
                yield from _set_fields(value, args[0], (*prefix, index))
            return


def _problem(error: Any, loc: tuple[str, ...], model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = sorted(_fields(_model_of(_type_at(model, loc[:-1])) or BaseModel))
        return "unknown key" + (did_you_mean(loc[-1], allowed)
                                or f" (allowed: {', '.join(allowed) or 'none'})")
    annotation = _type_at(model, loc)
    expected = f"expected {_type_name(annotation)}" if annotation is not None else ""
    if kind == "missing":
        return "required key is missing" + (f" ({expected})" if expected else "")
    secret = any(_is_secret_key(key) for key in loc) or annotation in (SecretStr, SecretBytes)
    value = error.get("input")
    got = f"{type(value).__name__} (value hidden)" if secret else _REPR.repr(_mask(value))
    if expected and (kind.endswith(("_type", "_parsing")) or kind in ("literal_error", "enum")):
        return f"{expected}, got {got}"
    return f"{error['msg']} (got {got})"


def _where(
    loc: tuple[str, ...],
    path: Path | None,
    lines: dict[tuple[str, ...], int],
    env_by_path: dict[tuple[str, ...], str],
) -> str:
    """The env var or file line that set ``loc`` (or its nearest parent)."""
    for length in range(len(loc), 0, -1):
        if (env_key := env_by_path.get(loc[:length])) is not None:
            return f"environment variable {env_key}"
        if (line := lines.get(loc[:length])) is not None and path is not None:
            return f"{path}:{line}"
    for key_path, env_key in env_by_path.items():  # an env var created this section
        if key_path[: len(loc)] == loc:
            return f"environment variable {env_key}"
    return str(path) if path else "defaults"


def _dotted(loc: tuple[Any, ...]) -> str:
    """``("example", "hosts", 0)`` -> ``example.hosts[0]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_REPR = reprlib.Repr(maxstring=60, maxother=60, maxlist=6, maxdict=6)


# -- display -------------------------------------------------------------------------------


def _is_secret_key(key: str) -> bool:
    """``api_key``, ``apiToken``, ``db_password`` are secrets; ``max_tokens``, ``key_id`` not."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()
    return re.split(r"[^a-z0-9]+", words)[-1] in SECRET_WORDS


def _plain(value: Any) -> Any:
    """``model_dump()`` output -> JSON-able data, with SecretStr/SecretBytes masked."""
    if isinstance(value, SecretStr | SecretBytes):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    return to_jsonable_python(value)


def _mask(value: Any, secret: bool = False) -> Any:
    """Mask every value under a secret-named key (a whole ``credentials:`` subtree too)."""
    if isinstance(value, dict):
        return {key: _mask(item, secret or _is_secret_key(str(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item, secret) for item in value]
    if secret and value not in (None, "") and not isinstance(value, bool):
        return MASK
    return value


# -- starter file --------------------------------------------------------------------------


def starter_yaml(host: PluginHost | None) -> str:
    """A commented starter ``osprey.yml`` with every setting at its default."""
    owners = {name: plugin for name, (_, plugin) in
              (host.config_sections() if host else {}).items()}
    lines = [
        "# osprey configuration. Every key shows its default; commented keys are unset.",
        "# Environment overrides: OSPREY__SECTION__KEY=value (e.g. OSPREY__HOME=/data/osprey).",
        "",
    ]
    _describe_model(config_model(host), 0, lines, owners)
    return "\n".join(lines).rstrip() + "\n"


def _describe_model(
    model: type[BaseModel],
    indent: int,
    lines: list[str],
    owners: dict[str, str],
    defaults: BaseModel | None = None,
) -> None:
    """Write ``model``'s keys; ``defaults`` is the instance a parent field defaults to."""
    pad = "  " * indent
    for name, info in model.model_fields.items():
        key = info.alias or name
        sub = _model_of(info.annotation, optional=False)
        comment = info.description or (_first_paragraph(sub.__doc__) if sub else "")
        if key in owners and indent == 0:
            comment = f"[plugin {owners[key]}] {comment}".strip()
        lines.extend(f"{pad}# {text}" for text in _wrap(comment, 88 - len(pad)))
        if defaults is not None:
            default = getattr(defaults, name)
        elif info.is_required():
            default = _REQUIRED
        else:
            default = info.get_default(call_default_factory=True)
        if sub is not None:
            lines.append(f"{pad}{key}:")
            _describe_model(sub, indent + 1, lines, owners,
                            default if isinstance(default, BaseModel) else None)
        elif default is _REQUIRED:
            lines.append(f"{pad}{key}:  # required: {_type_name(info.annotation)}")
        else:
            lines.append(_default_line(pad, key, default, info.annotation))
        if indent == 0:
            lines.append("")


_REQUIRED = object()


def _default_line(pad: str, key: str, default: Any, annotation: Any) -> str:
    if isinstance(default, SecretStr | SecretBytes):
        default = default.get_secret_value()
    default = to_jsonable_python(default)
    # Dump a one-key flow mapping and drop its braces: quoting stays YAML's job.
    rendered = yaml.safe_dump({key: default}, default_flow_style=True, width=10_000)
    rendered = rendered.strip()[1:-1]
    if default is None:
        return f"{pad}# {rendered}  # {_type_name(annotation)}"
    return f"{pad}{rendered}"


def _first_paragraph(doc: str | None) -> str:
    return inspect.cleandoc(doc).split("\n\n")[0] if doc else ""


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(" ".join(text.split()), width=width) if text.strip() else []

