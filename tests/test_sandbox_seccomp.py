"""The jail's seccomp allowlist, with the real nsjail: what it refuses and what still works.

Each denied family is tried from jailed Python with raw x86_64 system calls (ctypes'
``syscall()``), so the policy is tested rather than Python's wrappers. Where possible the
arguments are chosen so that the kernel itself would answer differently (succeed, or say
ENOENT/EBADF/EINVAL/EFAULT): an EPERM then comes from the filter. A few calls (pivot_root,
bpf, the module and reboot calls, ...) would also get EPERM from the kernel for lack of a
capability; for them the policy is a second wall.
"""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import pytest
from support.sandbox import SANDBOX_DIR, SMALL, run

from osprey_core.hookspecs.execution_backends import ExitReason
from osprey_core.sandbox.nsjail_backend import NsjailBackend
from osprey_core.sandbox.prepare import prepare_runtime
from osprey_core.sandbox.seccomp import DENIED_SYSCALLS, X86_64_SYSCALLS
from osprey_core.settings import ExecutionSettings

CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_THREAD, CLONE_NEWNS, CLONE_NEWUSER = 0x10000, 0x20000, 0x10000000
THREAD_FLAGS = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD
AT_FDCWD, MISSING = -100, "/no/such/path"
KEY_SPEC_PROCESS_KEYRING = -2

#: family -> (name, x86_64 number, arguments); a str argument is passed as a C string.
ATTEMPTS: dict[str, list[tuple[str, int, tuple[int | str, ...]]]] = {
    "process creation": [
        # a "thread" in a new mount namespace (the kernel: EINVAL, CLONE_NEWNS with CLONE_FS)
        ("clone", 56, (THREAD_FLAGS | CLONE_NEWNS, 0, 0, 0, 0)),
        ("clone", 56, (CLONE_NEWUSER | CLONE_FS, 0, 0, 0, 0)),
    ],
    "namespaces": [
        ("unshare", 272, (CLONE_NEWUSER,)),  # the kernel: allowed for anyone
        ("setns", 308, (-1, 0)),
    ],
    "mounts": [
        ("mount", 165, ("none", MISSING, "tmpfs", 0, 0)),
        ("umount2", 166, (MISSING, 0)),
        ("pivot_root", 155, (MISSING, MISSING)),
        ("chroot", 161, (MISSING,)),
        ("open_tree", 428, (AT_FDCWD, MISSING, 0)),
        ("move_mount", 429, (-1, "", -1, "", 0)),
        ("fsopen", 430, ("tmpfs", 0)),
        ("fsconfig", 431, (-1, 0, 0, 0, 0)),
        ("fsmount", 432, (-1, 0, 0)),
        ("fspick", 433, (AT_FDCWD, MISSING, 0)),
        ("mount_setattr", 442, (AT_FDCWD, MISSING, 0, 0, 0)),
    ],
    "tracing": [
        ("ptrace", 101, (2, 1, 0, 0)),  # PTRACE_PEEKDATA
        ("process_vm_readv", 310, (1, 0, 0, 0, 0, 0)),  # pid 1 is the code itself
        ("process_vm_writev", 311, (1, 0, 0, 0, 0, 0)),
        ("kcmp", 312, (1, 1, 0, 0, 0)),
        ("pidfd_getfd", 438, (-1, 0, 0)),
    ],
    "keyrings": [
        ("add_key", 248, ("user", "osprey", "x", 1, KEY_SPEC_PROCESS_KEYRING)),
        ("request_key", 249, ("user", "osprey", 0, 0)),
        ("keyctl", 250, (0, KEY_SPEC_PROCESS_KEYRING, 0)),  # KEYCTL_GET_KEYRING_ID
    ],
    "bpf and perf": [
        ("bpf", 321, (5, 0, 0)),  # BPF_PROG_LOAD
        ("perf_event_open", 298, (0, 0, -1, -1, 0)),
    ],
    "kernel modules": [
        ("init_module", 175, (0, 0, "")),
        ("finit_module", 313, (-1, "", 0)),
        ("delete_module", 176, ("osprey", 0)),
    ],
    "reboot and kexec": [
        ("reboot", 169, (0, 0, 0, 0)),
        ("kexec_load", 246, (0, 0, 0, 0)),
        ("kexec_file_load", 320, (-1, -1, 0, 0, 0)),
    ],
    "personality": [("personality", 135, (0xFFFFFFFF,))],  # a query
    "userfaultfd": [("userfaultfd", 323, (1,))],  # UFFD_USER_MODE_ONLY
    "io_uring": [
        ("io_uring_setup", 425, (0, 0)),
        ("io_uring_enter", 426, (-1, 0, 0, 0, 0, 0)),
        ("io_uring_register", 427, (-1, 0, 0, 0)),
    ],
    "file handles": [
        ("open_by_handle_at", 304, (-1, 0, 0)),
        ("name_to_handle_at", 303, (AT_FDCWD, MISSING, 0, 0, 0)),
    ],
    "identity": [
        ("setuid", 105, (65534,)),  # the kernel: allowed, it is the code's own uid
        ("setgid", 106, (65534,)),
        ("setreuid", 113, (-1, -1)),
        ("setregid", 114, (-1, -1)),
        ("setresuid", 117, (-1, -1, -1)),
        ("setresgid", 119, (-1, -1, -1)),
        ("setfsuid", 122, (65534,)),
        ("setfsgid", 123, (65534,)),
        ("setgroups", 116, (0, 0)),
        ("capset", 126, (0, 0)),
    ],
    "system administration": [
        ("swapon", 167, (MISSING, 0)),
        ("swapoff", 168, (MISSING,)),
        ("acct", 163, (0,)),
        ("quotactl", 179, (0x800005, MISSING, 0, 0)),  # Q_GETINFO
        ("quotactl_fd", 443, (-1, 0, 0, 0)),
        ("syslog", 103, (10, 0, 0)),  # SYSLOG_ACTION_SIZE_BUFFER
        ("sethostname", 170, ("x", 1)),
        ("setdomainname", 171, ("x", 1)),
        ("vhangup", 153, ()),
        ("lookup_dcookie", 212, (0, 0, 0)),
        ("ioperm", 173, (0, 0, 0)),  # turning nothing off: the kernel allows it
        ("iopl", 172, (0,)),
    ],
    "clocks": [
        ("settimeofday", 164, (0, 0)),  # nothing to set: the kernel returns 0
        ("clock_settime", 227, (0, 0)),
        ("clock_adjtime", 305, (0, 0)),
        ("adjtimex", 159, (0,)),
    ],
}

#: Runs ``CALLS`` (name, number, arguments) and prints {name: errno, or what it returned}.
SYSCALLS = """
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def argument(value):
    return ctypes.c_char_p(value.encode()) if isinstance(value, str) else ctypes.c_long(value)
report = {}
for name, number, args in CALLS:
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *map(argument, args))
    report.setdefault(name, []).append(ctypes.get_errno() if result == -1 else f"returned {result}")
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def jail(tmp_path_factory: pytest.TempPathFactory) -> NsjailBackend:
    settings = ExecutionSettings(runtime_dir=SANDBOX_DIR)
    prepare_runtime(settings)
    return NsjailBackend(settings, tmp_path_factory.mktemp("home"))


def syscalls(jail: NsjailBackend, calls: list[tuple[str, int, tuple[int | str, ...]]],
             output_dir: Path) -> dict[str, list[int | str]]:
    ran = run(jail, f"CALLS = {calls!r}\n{SYSCALLS}", output_dir)
    assert ran.outcome.exit_reason is ExitReason.OK, ran.outcome.stderr
    return json.loads(ran.outcome.stdout)


def test_every_denied_family_is_tried_with_the_policy_s_numbers() -> None:
    tried = {name: number for calls in ATTEMPTS.values() for name, number, _ in calls}
    policy = {name for names in DENIED_SYSCALLS.values() for name in names}
    assert set(tried) == policy - {"fork", "vfork"}  # those two: in the backend tests
    assert set(ATTEMPTS) == set(DENIED_SYSCALLS)
    assert {name: X86_64_SYSCALLS[name] for name in tried} == tried


def test_the_policy_s_numbers_are_the_kernel_s() -> None:
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if not header.is_file():
        pytest.skip("no kernel headers (linux-libc-dev) to compare with")
    kernel = {match[1]: int(match[2])
              for match in re.finditer(r"#define __NR_(\w+) (\d+)", header.read_text())}
    assert {name: kernel.get(name) for name in X86_64_SYSCALLS} == X86_64_SYSCALLS


@pytest.mark.parametrize("family", sorted(ATTEMPTS))
def test_a_denied_family_is_refused_with_eperm(jail: NsjailBackend, tmp_path: Path,
                                              family: str) -> None:
    report = syscalls(jail, ATTEMPTS[family], tmp_path / "out")
    assert report == {name: [errno.EPERM] * len(results) for name, results in report.items()}
    assert set(report) == {name for name, _, _ in ATTEMPTS[family]}


def test_the_reported_escape_stops_at_its_first_step(jail: NsjailBackend,
                                                     tmp_path: Path) -> None:
    """A nested user and mount namespace, then a tmpfs mounted in it."""
    code = """
import ctypes, os
steps = []
try:
    os.unshare(os.CLONE_NEWUSER | os.CLONE_NEWNS)
    steps.append("unshared")
except OSError as exc:
    steps.append(f"unshare: {exc.strerror}")
os.mkdir("target")
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(b"none", b"target", b"tmpfs", 0, None) == 0:
    steps.append("mounted")
else:
    steps.append(f"mount: {os.strerror(ctypes.get_errno())}")
print(steps)
"""
    ran = run(jail, code, tmp_path / "out")
    assert ran.outcome.stdout == ("['unshare: Operation not permitted', "
                                  "'mount: Operation not permitted']\n")


def test_calls_outside_the_allowlist_say_enosys(jail: NsjailBackend, tmp_path: Path) -> None:
    # each would succeed without the filter
    calls = [("sync", 162, ()), ("inotify_init1", 294, (0,)), ("memfd_create", 319, ("x", 0)),
             ("mknodat", 259, (AT_FDCWD, "fifo", 0o10600, 0)), ("clone3", 435, (0, 0)),
             ("getpid (x32 ABI)", 0x40000000 | 39, ())]
    report = syscalls(jail, calls, tmp_path / "out")
    assert report == {name: [errno.ENOSYS] for name, _, _ in calls}


def test_a_32_bit_system_call_kills_the_run_and_says_why(jail: NsjailBackend,
                                                         tmp_path: Path) -> None:
    """``int 0x80`` presents another architecture to seccomp: killed, not filtered by name."""
    code = """
import ctypes, mmap
buffer = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buffer.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))  # getpid via int 0x80; ret
print("calling", flush=True)
ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buffer)))()
print("survived")
"""
    ran = run(jail, code, tmp_path / "out")
    assert ran.outcome.stdout == "calling\n"
    assert (ran.outcome.exit_reason, ran.outcome.returncode) == (ExitReason.ERROR, 128 + 31)
    assert "killed by SIGSYS: a system call the sandbox forbids" in ran.outcome.notes


def test_analysis_code_still_runs_under_the_allowlist(jail: NsjailBackend,
                                                      tmp_path: Path) -> None:
    code = """
import asyncio, sqlite3, tempfile, threading
from concurrent.futures import ThreadPoolExecutor
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

matrix = np.random.default_rng(1).random((400, 400))
results["inverse"] = bool(np.allclose(matrix @ np.linalg.inv(matrix), np.eye(400)))
frame = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=500, freq="min", tz="UTC"),
                      "v": np.arange(500.0)})
frame.to_csv("frame.csv", index=False)
again = pd.read_csv("frame.csv", parse_dates=["t"])
results["hourly"] = again.set_index("t").v.resample("1h").mean().round(1).tolist()[:2]
with ThreadPoolExecutor(4) as pool:
    results["threads"] = sum(pool.map(lambda n: n * n, range(10)))
lock = threading.Lock()
with lock:
    results["asyncio"] = asyncio.run(asyncio.sleep(0.01, "slept"))
with tempfile.TemporaryDirectory() as folder:
    db = sqlite3.connect(f"{folder}/t.db")
    db.execute("create table t(a)")
    db.executemany("insert into t values (?)", [(n,) for n in range(10)])
    db.commit()
    results["sqlite"] = db.execute("select sum(a) from t").fetchone()[0]
plt.plot(frame.v)
plt.savefig("plot.png")
plt.savefig("plot.svg")
"""
    ran = run(jail, code, tmp_path / "out",
              limits=SMALL.model_copy(update={"memory_mb": 1024, "cpu_seconds": 20}))
    assert ran.outcome.exit_reason is ExitReason.OK, ran.outcome.stderr
    assert json.loads((ran.output_dir / "results.json").read_text()) == {
        "inverse": True, "hourly": [29.5, 89.5], "threads": 285, "asyncio": "slept",
        "sqlite": 45}
    assert (ran.output_dir / "plot.png").read_bytes().startswith(b"\x89PNG")
    assert (ran.output_dir / "plot.svg").read_text().lstrip().startswith("<?xml")
