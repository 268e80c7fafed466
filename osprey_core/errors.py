"""Error types. Each carries the CLI exit code it maps to (1 failure, 2 usage/config)."""

from __future__ import annotations

import errno
from pathlib import Path


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


class ApprovalError(OspreyError):
    """A decision was refused: unknown, already decided, expired, foreign or tampered."""

    #: True once the refusal is in the audit log (so it is written exactly once).
    audited = False


class RunError(OspreyError):
    """The run cannot do what was asked in its current state."""


class StepRefused(OspreyError):
    """A step the configuration already forbids (writes disabled, a channel's limits):
    refused while it is prepared, so nobody is asked to approve what cannot run."""


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was left out: errors
    quote what they refuse, never a megabyte of it."""
    if len(text) <= limit:
        return text
    keep = max(limit - 40, 10)
    return f"{text[:keep]}... ({len(text) - keep} more characters)"


class StorageError(OspreyError):
    """The disk refused to read or write one of osprey's own files (read-only, full, no
    permission, failing); the message names the path and the cause."""

    def __init__(self, action: str, path: Path | str, cause: OSError | str, *,
                 outcome: str = "nothing was changed") -> None:
        self.path = Path(path)
        self.errno = cause.errno if isinstance(cause, OSError) else None
        text = os_error_text(cause) if isinstance(cause, OSError) else cause
        super().__init__(f"cannot {action} {path}: {text}" + (f"; {outcome}" if outcome else ""))


#: What an OS error usually means for files under an osprey home.
_MEANINGS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is mounted read-only",
    errno.EACCES: "check who owns the directory and its permissions",
    errno.EPERM: "check who owns the directory and its permissions",
    errno.EIO: "the disk or a network file system failed",
}


def os_error_text(error: OSError) -> str:
    """The cause of ``error`` in words, e.g. ``No space left on device (disk full)``."""
    cause = error.strerror or str(error)
    meaning = _MEANINGS.get(error.errno or 0)
    return f"{cause} ({meaning})" if meaning else cause
