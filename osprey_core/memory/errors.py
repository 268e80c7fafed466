"""Errors of the memory store; every message names the user's file or the entry."""

from __future__ import annotations

from pathlib import Path

from osprey_core.errors import OspreyError


class MemoryStoreError(OspreyError):
    """A memory operation was refused; nothing was written."""


class InvalidUserError(MemoryStoreError):
    """The user id cannot name a memory file (empty, or not valid Unicode)."""

    exit_code = 2


class InvalidMemoryError(MemoryStoreError):
    """An entry, an edit or an import document is malformed."""


class MemoryNotFoundError(MemoryStoreError, LookupError):
    """No entry with the requested id."""


class MemoryLimitError(MemoryStoreError):
    """A size cap (per entry or per user) would be exceeded."""


class MemoryCorruptError(MemoryStoreError):
    """The user's memory file cannot be read; it is kept as is and no write is accepted
    until ``osprey memory repair`` moves it aside and salvages what it can."""

    def __init__(self, path: Path, reason: str, user: str) -> None:
        self.path = path
        self.reason = reason
        self.user = user
        super().__init__(
            f"memory file {path} is unreadable ({reason}); it was left untouched and no "
            f"memory of user {user!r} can be changed until it is repaired "
            f"(osprey memory repair --user {_shell_word(user)})")


def _shell_word(text: str) -> str:
    import shlex

    return shlex.quote(text)
