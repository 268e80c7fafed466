"""Copy what a sandboxed run left behind, never following a link the code planted."""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: Files the host takes back from one run, at most.
MAX_FILES = 1000


#: Top-level entries of the work dir that are the runtime's, not the code's results.
RUNTIME_ENTRIES = frozenset({".mpl"})


def copy_out(source: Path, target: Path, *, max_bytes: int) -> list[str]:
    """Copy regular files under ``source`` to ``target``; return what was skipped and why.

    Symlinks, devices, FIFOs and anything else that is not a regular file or directory are
    skipped, files are opened with ``O_NOFOLLOW`` (a link swapped in after the walk is not
    followed either), and copying stops at ``max_bytes`` in total or :data:`MAX_FILES`.
    """
    skipped: list[str] = []
    copied_bytes = copied_files = 0
    target.mkdir(parents=True, exist_ok=True)
    for directory, subdirs, files in os.walk(source, followlinks=False):
        relative = Path(directory).relative_to(source)
        if relative == Path("."):
            subdirs[:] = [name for name in subdirs if name not in RUNTIME_ENTRIES]
        for name in list(subdirs):
            if os.path.islink(os.path.join(directory, name)):
                subdirs.remove(name)
                skipped.append(f"{relative / name}: symlink not followed")
        for name in sorted(files):
            path = os.path.join(directory, name)
            shown = str(relative / name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError as exc:
                why = "symlink not followed" if os.path.islink(path) else exc.strerror
                skipped.append(f"{shown}: {why}")
                continue
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    skipped.append(f"{shown}: not a regular file")
                    continue
                if copied_files >= MAX_FILES or copied_bytes + info.st_size > max_bytes:
                    skipped.append(f"{shown}: over the collection limit")
                    continue
                destination = target / relative / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(handle.read(info.st_size))
                copied_bytes += info.st_size
                copied_files += 1
    return skipped
