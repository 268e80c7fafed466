"""JSON paths into web-service answers and the templates that build requests."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# -- JSON paths -------------------------------------------------------------------------

_PATH_TOKEN = re.compile(
    r"""\.(?P<key>[^.\[\]]+)|\[(?P<index>-?\d+)\]|\[(?:'(?P<sq>[^']*)'|"(?P<dq>[^"]*)")\]""")


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """``"data.value"``, ``"$.data.items[0]"`` or ``"$['a b']"`` -> keys and indexes.

    ``""`` and ``"$"`` mean the whole document.
    """
    text = path.strip()
    if text in ("", "$"):
        return ()
    if text.startswith("$"):
        text = text[1:]
    elif not text.startswith(("[", ".")):
        text = "." + text
    tokens: list[str | int] = []
    position = 0
    while position < len(text):
        match = _PATH_TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"invalid JSON path {path!r} near {text[position:]!r} (use "
                             "dotted keys and [index], e.g. data.values[0])")
        if match["index"] is not None:
            tokens.append(int(match["index"]))
        else:
            tokens.append(next(group for group in (match["key"], match["sq"], match["dq"])
                               if group is not None))
        position = match.end()
    return tuple(tokens)


class Missing(LookupError):
    pass


def extract(document: Any, path: str) -> Any:
    """The value at ``path`` in ``document``; ``Missing`` when it is not there."""
    current = document
    for token in parse_json_path(path):
        if isinstance(current, list):
            if isinstance(token, str) and re.fullmatch(r"-?\d+", token):
                token = int(token)
            if not isinstance(token, int) or not -len(current) <= token < len(current):
                raise Missing(path)
            current = current[token]
        elif isinstance(current, dict):
            if str(token) not in current:
                raise Missing(path)
            current = current[str(token)]
        else:
            raise Missing(path)
    return current


# -- templates --------------------------------------------------------------------------


def _fields(template: str) -> list[str]:
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or spec or conversion or not re.fullmatch(r"[a-z]+|\d+", name):
            raise ValueError(f"template {template!r}: use plain placeholders such as "
                             "{channel}, {value} or {1}; no format specs or empty {}")
        names.append(name)
    return names


def check_template(template: Any, allowed: set[str], wildcards: int, where: str) -> None:
    if isinstance(template, str):
        for name in _fields(template):
            if name.isdigit():
                if int(name) > wildcards:
                    raise ValueError(f"{where}: {{{name}}} but the pattern has only "
                                     f"{wildcards} wildcard(s)")
            elif name not in allowed:
                raise ValueError(f"{where}: unknown placeholder {{{name}}} (allowed: "
                                 f"{', '.join(sorted('{' + a + '}' for a in allowed))}, "
                                 "{0} for the channel and {1}.. for the pattern's wildcards)")
    elif isinstance(template, dict):
        for key, value in template.items():
            check_template(key, allowed, wildcards, where)
            check_template(value, allowed, wildcards, where)
    elif isinstance(template, list):
        for item in template:
            check_template(item, allowed, wildcards, where)


def value_text(value: Any) -> str:
    """How a value appears in a URL or form field: JSON, except that text stays bare."""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True, slots=True)
class Fill:
    channel: str
    groups: tuple[str, ...]  # groups[0] is the channel, then what each wildcard matched
    value: Any = None
    has_value: bool = False

    def text(self, template: str, escape: Callable[[str], str] = lambda text: text) -> str:
        names: dict[str, str] = {"channel": escape(self.channel)}
        if self.has_value:
            names["value"] = escape(value_text(self.value))
        return template.format(*(escape(group) for group in self.groups), **names)

    def json(self, template: Any) -> Any:
        """Fill a JSON body template; a string that is exactly ``{value}`` keeps its type."""
        if isinstance(template, str):
            if template == "{value}" and self.has_value:
                return self.value
            return self.text(template)
        if isinstance(template, dict):
            return {self.text(str(key)): self.json(item) for key, item in template.items()}
        if isinstance(template, list):
            return [self.json(item) for item in template]
        return template
