"""The jail's seccomp allowlist as an OCI profile (for ``podman run --security-opt
seccomp=FILE``): the same lists as the nsjail policy (:mod:`~osprey_core.sandbox.seccomp`),
the same errnos, the same argument rules for ``clone``, ``socket`` and ``prctl``."""

from __future__ import annotations

import json
from typing import Any

from osprey_core.sandbox.seccomp import (
    _AF_INET,
    _AF_INET6,
    _AF_NETLINK,
    _AF_UNIX,
    _CLONE_NAMESPACES,
    _CLONE_THREAD,
    _NETLINK_ROUTE,
    _PR_GET_NAME,
    _PR_SET_NAME,
    ALLOWED_SYSCALLS,
    DENIED_SYSCALLS,
    ENOSYS,
    EPERM,
)


def _when(name: str, action: str, *conditions: tuple[int, str, int, int],
          errno: int | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": [name], "action": action, "args": [
        {"index": index, "op": op, "value": value, "valueTwo": two}
        for index, op, value, two in conditions]}
    if errno is not None:
        rule["errnoRet"] = errno
    return rule


def oci_profile() -> str:
    """The profile as JSON text (x86_64 only, like the nsjail policy)."""
    allow, masked, equal = "SCMP_ACT_ALLOW", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_EQ"
    thread_mask = _CLONE_THREAD | _CLONE_NAMESPACES
    conditional = {"clone", "socket", "prctl"}
    rules: list[dict[str, Any]] = [
        {"names": sorted({n for group in ALLOWED_SYSCALLS.values() for n in group}),
         "action": allow},
        # a thread in the container's own namespaces; a new process is refused with EPERM
        _when("clone", allow, (0, masked, thread_mask, _CLONE_THREAD)),
        _when("clone", "SCMP_ACT_ERRNO", (0, masked, _CLONE_THREAD, 0), errno=EPERM),
        *(_when("socket", allow, (0, equal, family, 0))
          for family in (_AF_UNIX, _AF_INET, _AF_INET6)),
        _when("socket", allow, (0, equal, _AF_NETLINK, 0), (2, equal, _NETLINK_ROUTE, 0)),
        *(_when("prctl", allow, (0, equal, option, 0)) for option in (_PR_SET_NAME,
                                                                       _PR_GET_NAME)),
        {"names": sorted({n for group in DENIED_SYSCALLS.values() for n in group}
                         - conditional), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    return json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": ENOSYS,
                       "architectures": ["SCMP_ARCH_X86_64"], "syscalls": rules}, indent=1)
