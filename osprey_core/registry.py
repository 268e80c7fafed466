"""Registries: named items contributed by plugins, validated, with their origin recorded."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from osprey_core.errors import DuplicateNameError, RegistryError, UnknownNameError

# Lower-case words joined by '_', '-' or '.', so names are stable in config files and on
# the command line; dots allow hierarchical names such as ``osprey.logbook``. ``\Z``, not
# ``$``: ``$`` also matches before a trailing newline, which would let "epics\n" through.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(?:[.-][a-z0-9_]+)*\Z")


def did_you_mean(name: str, candidates: list[str]) -> str:
    """A ' (did you mean ...?)' hint, or '' when nothing is close."""
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True, slots=True)
class Entry[T]:
    name: str
    item: T
    plugin: str


class Registry[T]:
    """Items of one hook family keyed by name.

    ``expects`` says whether plugins hand over instances or classes; either way the item
    must be (a subclass of) ``kind`` and carry a valid ``name``. Duplicate names are
    refused with both plugins named: silently renaming or replacing one would let a
    plugin shadow, say, the EPICS connector without anyone noticing.
    """

    def __init__(self, label: str, kind: type, expects: Literal["instance", "class"]) -> None:
        self.label = label
        self.kind = kind
        self.expects = expects
        self._entries: dict[str, Entry[T]] = {}
        self._sealed = False

    def seal(self) -> None:
        """Refuse every later :meth:`add`: the set is fixed once the plugins are loaded."""
        self._sealed = True

    def add(self, item: T, *, plugin: str) -> None:
        if self._sealed:
            raise RegistryError(f"plugin '{plugin}' cannot add a {self.label} now: the "
                                f"{self.label} registry is sealed once plugins are loaded")
        name = self._validate(item, plugin)
        if existing := self._entries.get(name):
            raise DuplicateNameError(
                f"{self.label} '{name}' is registered twice: by plugin '{existing.plugin}' "
                f"and by plugin '{plugin}'. Disable one of them "
                f"(OSPREY_DISABLE_PLUGINS={plugin})."
            )
        self._entries[name] = Entry(name, item, plugin)

    def _validate(self, item: object, plugin: str) -> str:
        if self.expects == "class":
            valid = isinstance(item, type) and issubclass(item, self.kind)
        else:
            valid = isinstance(item, self.kind)
        if not valid:
            article = "a subclass of" if self.expects == "class" else "an instance of"
            raise RegistryError(
                f"plugin '{plugin}' registered {item!r} as a {self.label}, "
                f"but it must be {article} {self.kind.__module__}.{self.kind.__qualname__}"
            )
        if self.expects == "class" and inspect.isabstract(item):
            missing = ", ".join(sorted(getattr(item, "__abstractmethods__", ())))
            raise RegistryError(
                f"plugin '{plugin}' registered {self.label} {item.__qualname__} "  # type: ignore[union-attr]
                f"with unimplemented abstract methods: {missing}"
            )
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise RegistryError(
                f"plugin '{plugin}' registered a {self.label} with invalid name {name!r}: "
                "use lower-case letters, digits and '_', '-' or '.' separators"
            )
        return name

    def get(self, name: str) -> T:
        try:
            return self._entries[name].item
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            hint = did_you_mean(name, list(self._entries))
            raise UnknownNameError(
                f"no {self.label} named '{name}'{hint}; registered: {known}"
            ) from None

    def origin(self, name: str) -> str:
        """The plugin that registered ``name``."""
        self.get(name)
        return self._entries[name].plugin

    def entries(self) -> list[Entry[T]]:
        return sorted(self._entries.values(), key=lambda entry: entry.name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return (entry.item for entry in self.entries())

    def __len__(self) -> int:
        return len(self._entries)
