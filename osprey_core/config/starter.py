"""The commented starter file ``osprey config init`` writes, made from the models."""

from __future__ import annotations

import inspect
import textwrap
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

from osprey_core.config.annotations import model_of, type_name
from osprey_core.config.model import config_model

if TYPE_CHECKING:

    from osprey_core.plugin_host import PluginHost


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
        sub = model_of(info.annotation, optional=False)
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
            lines.append(f"{pad}{key}:  # required: {type_name(info.annotation)}")
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
        return f"{pad}# {rendered}  # {type_name(annotation)}"
    return f"{pad}{rendered}"


def _first_paragraph(doc: str | None) -> str:
    return inspect.cleandoc(doc).split("\n\n")[0] if doc else ""


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(" ".join(text.split()), width=width) if text.strip() else []
