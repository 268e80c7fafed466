"""Errors of the memory store; every message names the user's file or the entry."""

from __future__ import annotations

from pathlib import Path

from osprey_core.errors import OspreyError, os_error_text


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


class MemoryStorageError(MemoryStoreError):
    """The disk refused a read or a write (read-only, full, no permission, failing).

    ``written`` is true only when the new file was already in place and merely syncing
    its directory failed; otherwise nothing was changed.
    """

    def __init__(self, action: str, path: Path, error: OSError, *, step: str = "",
                 written: bool = False) -> None:
        self.path = path
        self.errno = error.errno
        self.written = written
        where = f" ({step})" if step else ""
        outcome = ("the change is in place but may not survive a power cut" if written
                   else "nothing was changed")
        super().__init__(f"cannot {action} {path}{where}: {os_error_text(error)}; {outcome}")


def _shell_word(text: str) -> str:
    import shlex

    return shlex.quote(text)
