"""One run's work dir on the host, mounted in the jail at ``/work``: a size-capped tmpfs
owned by the jail's uid when the host allows mounting one, with the run's inputs; copied out
to the run's output folder when the code has finished."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osprey_core.hookspecs.execution_backends import SandboxJob
from osprey_core.sandbox.collect import copy_out
from osprey_core.sandbox.interpreter import RuntimeInfo
from osprey_core.sandbox.spawn import StartFailed, write_inputs

#: The unprivileged uid and gid the code runs as (``nobody``), mapped one to one.
JAIL_ID = 65534
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH = 2
MIB = 1024 * 1024
#: A work dir holding at most this much is copied out on the event loop.
INLINE_COPY_BYTES = MIB


@functools.cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def mount_tmpfs(path: Path, size_mb: int, uid: int) -> None:
    """Mount a ``size_mb`` tmpfs owned by ``uid`` on ``path`` (needs root)."""
    options = f"size={size_mb}m,mode=0700,uid={uid},gid={uid}".encode()
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _libc().mount(b"tmpfs", str(path).encode(), b"tmpfs", flags, options) != 0:
        import ctypes

        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), str(path))


def unmount(path: Path) -> None:
    _libc().umount2(str(path).encode(), _MNT_DETACH)


@dataclass
class Scratch:
    """One run's work dir on the host (mounted at ``/work``): a tmpfs when possible."""

    work: Path
    mounted: bool = False
    notes: list[str] = field(default_factory=list)

    def remove(self) -> None:
        if self.mounted:
            unmount(self.work)
        try:
            self.work.rmdir()  # empty once its tmpfs is gone
        except OSError:
            shutil.rmtree(self.work, ignore_errors=True)


def outside_ids() -> tuple[int, int]:
    """Outside ids for the jail's 65534: itself as root, else our own (one-id user map)."""
    return (JAIL_ID, JAIL_ID) if os.geteuid() == 0 else (os.getuid(), os.getgid())


def create_scratch(runtime: RuntimeInfo, job: SandboxJob, *, require_quota: bool) -> Scratch:
    """The run's work dir, as a tmpfs of ``work_dir_mb`` when possible, with its inputs."""
    scratch = Scratch(Path(tempfile.mkdtemp(prefix="run-", dir=runtime.scratch_dir)))
    try:
        uid, gid = outside_ids()
        try:
            mount_tmpfs(scratch.work, job.limits.work_dir_mb, uid)
            scratch.mounted = True
        except OSError as exc:
            if require_quota:
                raise StartFailed(
                    f"cannot cap the work dir with a tmpfs ({exc.strerror}; needs root) and "
                    "execution.require_work_dir_quota is true") from None
            scratch.notes.append(f"work dir quota not enforced ({exc.strerror}): only the "
                                 f"per-file limit of {job.limits.file_mb} MiB applies")
            os.chown(scratch.work, uid, gid)
        write_inputs(scratch.work, job, owner=(uid, gid), seed=runtime.seed_files())
    except BaseException:
        scratch.remove()
        raise
    return scratch



async def copy_work_dir_out(scratch: Scratch, job: SandboxJob) -> list[str]:
    """Copy the work dir out: in a thread, unless its tmpfs holds little (the hop to a
    thread then costs more than the copy)."""
    limit = job.limits.work_dir_mb * MIB
    if scratch.mounted:
        usage = os.statvfs(scratch.work)
        if (usage.f_blocks - usage.f_bfree) * usage.f_frsize <= INLINE_COPY_BYTES:
            return copy_out(scratch.work, job.output_dir, max_bytes=limit)
    return await asyncio.to_thread(copy_out, scratch.work, job.output_dir, max_bytes=limit)

