"""The ``podman`` execution backend: generated code in a throw-away container, under the
nsjail backend's contract (``docs/sandbox.md``).

No network (``--network none``: only a loopback of its own), a read-only root made of an
empty image plus read-only binds of the prepared interpreter, the shim and the system
libraries, the run's size-capped tmpfs work dir at ``/work`` (the same scratch as nsjail),
cgroup memory and pids limits plus rlimits (address space, CPU, file size, descriptors),
the same default-deny seccomp allowlist (as an OCI profile), uid/gid 65534 with no
capabilities and ``no-new-privileges``, a clean environment, stdin on ``/dev/null``, output
streamed with the cap, the broker at fd 3 (``--preserve-fds``), and the container removed
whatever happened. About 0.3 s a run on top of the code (nsjail: ~15 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

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
from osprey_core.sandbox.interpreter import RuntimeInfo, check_runtime, load_runtime, refresh_shim
from osprey_core.sandbox.jail_config import MAX_TASKS, SYSTEM_PATHS
from osprey_core.sandbox.nsjail_backend import NsjailBackend
from osprey_core.sandbox.scratch import JAIL_ID, copy_work_dir_out, create_scratch
from osprey_core.sandbox.seccomp_oci import oci_profile
from osprey_core.sandbox.spawn import StartFailed, classify, run_process, sandbox_environment

MIB = 1024 * 1024
#: podman's own failures (not the code's): 125 podman, 126 not executable, 127 not found.
PODMAN_FAILURES = (125, 126, 127)
#: Every sandbox container carries this label (``podman ps --filter label=...``).
LABEL = "io.osprey.sandbox=run"


def podman_binary() -> str:
    found = shutil.which("podman")
    if found is None:
        raise StartFailed("podman not found (Debian: apt-get install -y podman runc)")
    return found


def _podman_env() -> dict[str, str]:
    """The podman client's environment (never the container's: that one is given whole)."""
    return {key: os.environ[key] for key in ("PATH", "HOME", "XDG_RUNTIME_DIR",
                                             "CONTAINERS_STORAGE_CONF") if key in os.environ}


@functools.cache
def _state_dir() -> Path:
    """The seccomp profile and the root image's tarball live here for this process."""
    return Path(tempfile.mkdtemp(prefix="osprey-podman-"))


@functools.cache
def _profile() -> Path:
    path = _state_dir() / "seccomp.json"
    path.write_text(oci_profile())
    return path


#: Root images this process has seen to exist (checking costs a podman call per run).
_KNOWN_IMAGES: set[str] = set()


def _root_image(podman: str) -> str:
    """An image with nothing but mount points, ``nobody`` and Debian's merged-/usr links:
    everything the code can see is bound in read-only at run time."""
    links = {name: os.readlink(f"/{name}") for name in ("lib", "lib64", "bin", "sbin")
             if os.path.islink(f"/{name}")}
    passwd = "nobody:x:65534:65534:nobody:/work:/bin/false\n"
    group = "nogroup:x:65534:\n"
    tag = hashlib.sha256(repr((sorted(links.items()), passwd, group)).encode()).hexdigest()[:12]
    ref = f"localhost/osprey-sandbox-root:{tag}"
    env = _podman_env()
    if ref in _KNOWN_IMAGES or subprocess.run([podman, "image", "exists", ref], env=env,
                                              check=False).returncode == 0:
        _KNOWN_IMAGES.add(ref)
        return ref
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging)
        for folder in ("usr", "etc", "dev", "proc", "sys", JAIL_WORK_DIR.strip("/")):
            (root / folder).mkdir()
        for name, target in links.items():
            (root / name).symlink_to(target)
        (root / "etc" / "passwd").write_text(passwd)
        (root / "etc" / "group").write_text(group)
        archive = Path(staging) / "root.tar"
        subprocess.run(["tar", "-C", staging, "--exclude=./root.tar", "-cf", str(archive),
                        "."], check=True)
        done = subprocess.run([podman, "import", str(archive), ref], env=env,
                              capture_output=True, text=True, check=False)
    if done.returncode:
        raise StartFailed(f"podman import of the sandbox root failed: {done.stderr.strip()}")
    _KNOWN_IMAGES.add(ref)
    return ref


class PodmanBackend(ExecutionBackend):
    """Runs code in a podman container: no network, read-only root, capped work dir."""

    name = "podman"
    description = ("podman: a throw-away container with no network, a read-only root, "
                   "cgroup and rlimit limits, seccomp and a size-capped tmpfs work dir.")
    isolated = True

    def _runtime(self) -> RuntimeInfo:
        runtime = load_runtime(self.settings.runtime_dir)
        if runtime is None:
            raise StartFailed(f"the sandbox interpreter is not prepared in "
                              f"{self.settings.runtime_dir}: run `osprey sandbox setup`")
        refresh_shim(runtime.lib_dir)
        return runtime

    def command(self, podman: str, image: str, runtime: RuntimeInfo, work: Path,
                job: SandboxJob, container: str) -> list[str]:
        """The ``podman run`` command line of one job."""
        limits = job.limits
        environment = sandbox_environment(job, path=f"{runtime.jail_prefix}/bin:/usr/bin:/bin")
        argv = [podman, "run", "--rm", "--name", container, "--label", LABEL,
                "--network", "none", "--read-only", "--read-only-tmpfs=false",
                "--user", f"{JAIL_ID}:{JAIL_ID}", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges",
                "--security-opt", f"seccomp={_profile()}",
                "--pids-limit", str(MAX_TASKS), "--memory", f"{limits.memory_mb}m",
                "--memory-swap", f"{limits.memory_mb}m",
                "--ulimit", f"cpu={limits.cpu_seconds + 1}:{limits.cpu_seconds + 1}",
                "--ulimit", f"fsize={limits.file_mb * MIB}:{limits.file_mb * MIB}",
                "--ulimit", f"nofile={limits.open_files}:{limits.open_files}",
                "--ulimit", f"nproc={MAX_TASKS * 16}:{MAX_TASKS * 16}",
                "--timeout", str(int(limits.wall_seconds) + 5),  # backstop: our timer first
                "--log-driver", "none", "--hostname", "osprey-sandbox", "--unsetenv-all",
                "--workdir", JAIL_WORK_DIR,
                "--volume", f"{work}:{JAIL_WORK_DIR}:rw,nosuid,nodev,noexec",
                "--volume", f"{runtime.python_dir}:{runtime.jail_prefix}:ro",
                "--volume", f"{runtime.lib_dir}:{runtime.lib_dir}:ro"]
        for path in SYSTEM_PATHS:
            if os.path.isdir(path) and not os.path.islink(path):
                argv += ["--volume", f"{path}:{path}:ro"]
        for key, value in environment.items():
            argv += ["--env", f"{key}={value}"]
        if job.broker_fd is not None:
            argv += ["--preserve-fds", "1"]
        # podman has no address-space ulimit: the interpreter sets it on itself first, so
        # a large allocation is a MemoryError (as under nsjail), the cgroup the backstop;
        # podman always sets HOSTNAME (to "osprey-sandbox"): dropped, so the environment is
        # exactly the one nsjail gives
        prelude = (f"import os, resource; os.environ.pop('HOSTNAME', None); "
                   f"resource.setrlimit(resource.RLIMIT_AS, "
                   f"({limits.memory_mb * MIB}, {limits.memory_mb * MIB}))\n")
        return [*argv, image, runtime.jail_python, "-I", "-S", "-u", "-c",
                prelude + LAUNCHER.format(lib=str(runtime.lib_dir), cpu=limits.cpu_seconds)]

    async def run(self, job: SandboxJob, on_output: OutputCallback | None = None) -> SandboxOutcome:
        started = time.monotonic()
        container = f"osprey-run-{uuid.uuid4().hex[:16]}"
        try:
            podman = podman_binary()
            runtime = self._runtime()
            image = await asyncio.to_thread(_root_image, podman)
            scratch = create_scratch(runtime, job,
                                     require_quota=self.settings.require_work_dir_quota)
        except StartFailed as exc:
            return self._start_failed(str(exc), started)
        stop = asyncio.Event()
        watchdog = asyncio.create_task(_remove_on(stop, job.limits.wall_seconds + 0.1, podman,
                                                  container))
        # ``--rm``: a podman client that ended by itself removed its container; one we
        # killed (wall limit, output cap, cancellation) left it to conmon
        ended_by_itself = False
        try:
            result = await run_process(
                self.command(podman, image, runtime, scratch.work, job, container),
                env=_podman_env(), wall_seconds=job.limits.wall_seconds,
                output_bytes=job.limits.output_bytes,
                on_output=_counting(on_output, job.limits.output_bytes, stop),
                broker_fd=job.broker_fd)
            if result.returncode in PODMAN_FAILURES and result.stderr.startswith("Error:"):
                return self._start_failed("podman could not start the container:\n"
                                          + result.stderr.strip(), started, result.returncode)
            ended_by_itself = not (result.timed_out or result.output_truncated)
            if not ended_by_itself:
                await _remove(podman, container)  # before copying: nothing writes any more
            notes = scratch.notes + await copy_work_dir_out(scratch, job)
            reason = classify(result, cpu_limit=job.limits.cpu_seconds)
            if reason is ExitReason.ERROR and result.returncode == 137:
                reason = ExitReason.MEMORY  # the cgroup's OOM killer (nothing else kills)
            return SandboxOutcome(
                exit_reason=reason, returncode=result.returncode, stdout=result.stdout,
                stderr=result.stderr, output_truncated=result.output_truncated,
                wall_seconds=result.wall_seconds, backend=self.name, isolated=self.isolated,
                notes=notes)
        finally:
            watchdog.cancel()
            if not ended_by_itself:
                await _remove(podman, container)
            scratch.remove()

    def _start_failed(self, message: str, started: float,
                      returncode: int | None = None) -> SandboxOutcome:
        return SandboxOutcome(ExitReason.START_FAILED, returncode, "", message, False,
                              time.monotonic() - started, self.name, self.isolated)

    def check(self) -> list[CheckItem]:
        try:
            podman = podman_binary()
        except StartFailed as exc:
            return [CheckItem("podman", False, str(exc))]
        version = subprocess.run([podman, "--version"], capture_output=True, text=True,
                                 env=_podman_env(), check=False).stdout.strip()
        items = [CheckItem("podman", True, version), *check_runtime(self.settings)]
        if all(item.ok for item in items):
            # the nsjail backend's probe and trial, run here: the same contract, checked
            # the same way (process creation, namespaces, network, threads, packages)
            # (the container's loopback is its own: only a route out is checked)
            trial = asyncio.run(NsjailBackend._trial_runs(self))  # type: ignore[arg-type]
            items += [item for item in trial if item.name != "jail: network"]
            items.append(self._network_check())
        return items

    def _network_check(self) -> CheckItem:
        code = ("import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                ".connect(('192.0.2.1', 53))\n    print('a route out')\n"
                "except OSError as exc:\n    print(f'no route out ({exc.strerror})')\n")
        with tempfile.TemporaryDirectory() as output:
            ran = asyncio.run(self.run(SandboxJob(code, self.settings.limits, Path(output))))
        answer = ran.stdout.strip() or f"{ran.exit_reason}: {ran.stderr.strip()[-300:]}"
        return CheckItem("container: network", answer.startswith("no route out"), answer)


async def _remove(podman: str, container: str) -> None:
    """Remove the container if it still exists (a killed client leaves it to conmon)."""
    process = await asyncio.create_subprocess_exec(
        podman, "rm", "--force", "--ignore", "--time", "0", container, env=_podman_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await process.wait()


def _counting(on_output: OutputCallback | None, cap: int,
              capped: asyncio.Event) -> OutputCallback:
    """Forward output and set ``capped`` once it reaches the cap (text kept by the capture
    stops exactly at the cap, give or take a split character)."""
    seen = 0

    def forward(stream: str, text: str) -> None:
        nonlocal seen
        seen += len(text.encode())
        if seen >= cap - 4:
            capped.set()
        if on_output is not None:
            on_output(stream, text)

    return forward


async def _remove_on(stop: asyncio.Event, wall_seconds: float, podman: str,
                     container: str) -> None:
    """At the wall limit or the output cap, remove the container at once: killing the
    podman client leaves it to conmon, which keeps the output pipes open until it ends."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), wall_seconds)
    await _remove(podman, container)
