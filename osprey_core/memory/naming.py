"""File names for user ids: collision-free, reversible and safe on any filesystem.

Every UTF-8 byte outside ``[a-z0-9-]`` becomes ``_XX`` (upper-case hex), so ``a.b``,
``ab``, ``a/b``, ``A`` and ``a`` all get distinct names, none contains a path separator or
starts with a dot, and names differ even on case-insensitive filesystems (literal letters
are lower case, escapes upper case). Ids whose encoding would be too long for a file name
get ``_h-<sha256>`` instead (``h`` is not a hex digit, so no encoded id looks like that);
their id is read back from the file, which always records it.
"""

from __future__ import annotations

import hashlib
import re

from osprey_core.memory.errors import InvalidUserError

_LITERAL = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-")
#: Longest encoded stem; leaves room for ``.json.corrupt-<timestamp>`` and temp-file
#: decorations within the usual 255-byte limit on a file name.
MAX_STEM = 160
HASHED_PREFIX = "_h-"
_ENCODED = re.compile(r"(?:[a-z0-9-]|_[0-9A-F]{2})+")


def user_bytes(user: str) -> bytes:
    """The id as UTF-8; an empty id or one that is not valid Unicode is refused."""
    if not isinstance(user, str) or user == "":
        raise InvalidUserError("the user id is empty")
    try:
        return user.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidUserError(f"the user id {user!r} is not valid Unicode") from None


def encode_user(user: str) -> str:
    """The file stem for ``user``."""
    raw = user_bytes(user)
    stem = "".join(chr(byte) if byte in _LITERAL else f"_{byte:02X}" for byte in raw)
    if len(stem) > MAX_STEM:
        return HASHED_PREFIX + hashlib.sha256(raw).hexdigest()
    return stem


def decode_stem(stem: str) -> str | None:
    """The user id a stem encodes; ``None`` for a hashed stem (the id is in the file).

    Raises ``ValueError`` for a stem this module never produces.
    """
    if stem.startswith(HASHED_PREFIX):
        return None
    if not _ENCODED.fullmatch(stem):
        raise ValueError(f"{stem!r} is not an encoded user id")
    raw = bytearray()
    index = 0
    while index < len(stem):
        if stem[index] == "_":
            raw.append(int(stem[index + 1:index + 3], 16))
            index += 3
        else:
            raw.append(ord(stem[index]))
            index += 1
    user = bytes(raw).decode("utf-8")
    if encode_user(user) != stem:  # e.g. ``_61`` for a literal ``a``: not canonical
        raise ValueError(f"{stem!r} is not the canonical name of {user!r}")
    return user
