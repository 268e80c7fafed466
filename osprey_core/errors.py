"""Error types. Each carries the CLI exit code it maps to (1 failure, 2 usage/config)."""

from __future__ import annotations


class OspreyError(Exception):
    """Base of every error osprey-core raises on purpose; its message is for operators."""

    exit_code = 1


class ConfigError(OspreyError):
    """The configuration (file, environment override or plugin section) is invalid."""

    exit_code = 2


class PluginError(OspreyError):
    """A plugin failed to load or misbehaved; the message names the plugin."""


class RegistryError(OspreyError):
    """A registry refused an item: wrong type, bad name or a duplicate."""


class UnknownNameError(RegistryError, LookupError):
    """Nothing is registered under the requested name."""


class DuplicateNameError(RegistryError):
    """Two plugins registered the same name in one family; the message names both."""


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was left out: errors
    quote what they refuse, never a megabyte of it."""
    if len(text) <= limit:
        return text
    keep = max(limit - 40, 10)
    return f"{text[:keep]}... ({len(text) - keep} more characters)"
