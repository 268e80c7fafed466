"""Errors people can act on: pydantic's, and the rules its lax mode would let through, each
with the file, line, key path and what was expected."""

from __future__ import annotations

import reprlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError

from osprey_core.config.annotations import fields_of, model_of, type_at, type_name, union_options
from osprey_core.config.display import is_secret_key, mask
from osprey_core.registry import did_you_mean

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from osprey_core.plugin_host import PluginHost


# -- explaining errors ---------------------------------------------------------------------


def explain(
    exc: ValidationError,
    model: type[BaseModel],
    path: Path | None,
    lines: dict[tuple[str, ...], int],
    overrides: dict[str, tuple[tuple[str, ...], Any]],
) -> str:
    problems = [(tuple(error["loc"]), _problem(error, tuple(map(str, error["loc"])), model))
                for error in exc.errors()]
    return report(problems, path, lines, overrides)


def report(
    problems: list[tuple[tuple[Any, ...], str]],
    path: Path | None,
    lines: dict[tuple[str, ...], int],
    overrides: dict[str, tuple[tuple[str, ...], Any]],
) -> str:
    """``invalid configuration in FILE:`` and one ``where: key: problem`` line each."""
    env_by_path = {key_path: env_key for env_key, (key_path, _) in overrides.items()}
    rendered = [f"{_where(tuple(map(str, loc)), path, lines, env_by_path)}: "
                f"{dotted_path(loc) or '(top level)'}: {problem}" for loc, problem in problems]
    source = str(path) if path else "the configuration"
    return f"invalid configuration in {source}:\n  " + "\n  ".join(rendered)


# -- rules pydantic's lax mode would let through -------------------------------------------


def strict_problems(
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
        options = union_options(info.annotation)
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
    for option in union_options(annotation):
        if (model := model_of(option)) is not None and isinstance(data, dict):
            fields = fields_of(model)
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
        allowed = sorted(fields_of(model_of(type_at(model, loc[:-1])) or BaseModel))
        return "unknown key" + (did_you_mean(loc[-1], allowed)
                                or f" (allowed: {', '.join(allowed) or 'none'})")
    annotation = type_at(model, loc)
    expected = f"expected {type_name(annotation)}" if annotation is not None else ""
    if kind == "missing":
        return "required key is missing" + (f" ({expected})" if expected else "")
    secret = any(is_secret_key(key) for key in loc) or annotation in (SecretStr, SecretBytes)
    value = error.get("input")
    got = f"{type(value).__name__} (value hidden)" if secret else _REPR.repr(mask(value))
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


def dotted_path(loc: tuple[Any, ...]) -> str:
    """``("example", "hosts", 0)`` -> ``example.hosts[0]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_REPR = reprlib.Repr(maxstring=60, maxother=60, maxlist=6, maxdict=6)
