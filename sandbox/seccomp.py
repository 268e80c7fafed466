"""The jail's seccomp policy: a default-deny allowlist in kafel (nsjail's policy language).

A refused call fails with an errno, so the code gets an ordinary Python exception rather than
a SIGSYS death: EPERM for the families in :data:`DENIED_SYSCALLS`, ENOSYS for anything else
not allowed, which is also what glibc and CPython take as "fall back to the older call".
Calls made through another ABI (``int 0x80``) are killed by kafel's architecture check.
Written for x86_64; see ``docs/sandbox.md``.
"""

from __future__ import annotations

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
