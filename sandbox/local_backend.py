"""The ``local`` execution backend: a plain subprocess, for development only.

NO ISOLATION: the code runs as osprey's own user, with the host's network, filesystem and
processes in reach. Only the environment is clean, and rlimits, the wall timer and the
output cap apply. The execution service refuses this backend for write mode.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
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
from osprey_core.sandbox.collect import copy_out
from osprey_core.sandbox.interpreter import refresh_shim
from osprey_core.sandbox.spawn import (
    StartFailed,
    classify,
    run_process,
    sandbox_environment,
    write_inputs,
)

log = logging.getLogger(__name__)

NO_ISOLATION = ("local backend: NO ISOLATION - the code ran as osprey's own user with the "
                "host's network and files in reach (development only)")
MIB = 1024 * 1024
#: Runs before the code (``-I -S``: no site, cheap): sets the rlimits, enters the work dir
#: and replaces itself with the interpreter running the bootstrap.
LIMITER = """
import os, resource, sys
memory, cpu, fsize, nofile = (int(value) for value in sys.argv[1:5])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
os.chdir(sys.argv[5])
os.execv(sys.argv[6], sys.argv[6:])
"""


class LocalBackend(ExecutionBackend):
    """Runs code in a plain subprocess of the host interpreter: limits, but no isolation."""

    name = "local"
    description = "Plain subprocess, NO isolation: development only, never for writes."
    isolated = False

    async def run(self, job: SandboxJob, on_output: OutputCallback | None = None) -> SandboxOutcome:
        log.warning(NO_ISOLATION)
        started = time.monotonic()
        root = Path(tempfile.mkdtemp(prefix="osprey-local-"))
        work, lib = root / "work", root / "lib"
        try:
            work.mkdir()
            refresh_shim(lib)
            try:
                write_inputs(work, job)
            except StartFailed as exc:
                return SandboxOutcome(
                    ExitReason.START_FAILED, None, "", str(exc), False,
                    time.monotonic() - started, self.name, self.isolated, [NO_ISOLATION])
            limits = job.limits
            argv = [sys.executable, "-I", "-S", "-c", LIMITER, str(limits.memory_mb * MIB),
                    str(limits.cpu_seconds), str(limits.file_mb * MIB), str(limits.open_files),
                    str(work), sys.executable, "-I", "-u",
                    str(lib / "osprey_core" / "sandbox" / "bootstrap.py"), "code.py"]
            result = await run_process(
                argv, env=sandbox_environment(job, work_dir=str(work)),
                wall_seconds=limits.wall_seconds, output_bytes=limits.output_bytes,
                on_output=on_output, broker_fd=job.broker_fd)
            skipped = await asyncio.to_thread(
                copy_out, work, job.output_dir, max_bytes=limits.work_dir_mb * MIB)
            return SandboxOutcome(
                exit_reason=classify(result, cpu_limit=limits.cpu_seconds),
                returncode=result.returncode, stdout=result.stdout, stderr=result.stderr,
                output_truncated=result.output_truncated, wall_seconds=result.wall_seconds,
                backend=self.name, isolated=self.isolated,
                notes=[NO_ISOLATION, "work dir quota not enforced", *skipped])
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def check(self) -> list[CheckItem]:
        return [CheckItem("interpreter", True, sys.executable),
                CheckItem("isolation: none (development only)", True, NO_ISOLATION)]
