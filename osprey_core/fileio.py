"""File writes that never leave a half-written file behind, and say why when they fail."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from osprey_core.errors import StorageError


def atomic_write_text(path: Path, text: str, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``text`` to ``path`` via a temp file and a rename in the same directory.

    Readers see either the old or the new content, never a truncated file, even if the
    process dies halfway. ``durable`` also fsyncs the file and its directory, so the new
    content survives a power cut (~0.5 ms more). A refusal of the disk (read-only, full,
    no permission) is a :class:`StorageError` naming the path and the cause; the old
    content is then untouched and no temp file is left behind.
    """
    tmp_name = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                        suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except OSError as exc:
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)
        raise StorageError("write", path, exc) from exc
    except BaseException:
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)
        raise
    if not durable:
        return
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError("sync the directory of", path, exc,
                           outcome="the new content is in place but may not survive a "
                           "power cut") from exc
