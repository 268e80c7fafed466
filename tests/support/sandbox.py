"""Helpers for the sandbox tests: run a job, and prove the host kept nothing behind."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from osprey_core.hookspecs.execution_backends import (
    ExecutionBackend,
    OutputCallback,
    SandboxJob,
    SandboxOutcome,
)
from osprey_core.settings import SandboxLimits

#: The runtime the tests prepare once: world-traversable, unlike pytest's tmp_path (0700).
SANDBOX_DIR = Path(os.environ.get("OSPREY_TEST_SANDBOX_DIR", "/opt/osprey-sandbox"))
#: Small limits keep the bombs quick.
SMALL = SandboxLimits(wall_seconds=10, cpu_seconds=1, memory_mb=256, work_dir_mb=8, file_mb=4,
                      open_files=64, output_bytes=20_000)


@dataclass
class Ran:
    outcome: SandboxOutcome
    output_dir: Path


def run(backend: ExecutionBackend, code: str, output_dir: Path, *,
        limits: SandboxLimits = SMALL, env: dict[str, str] | None = None,
        broker_fd: int | None = None, files: dict[str, bytes] | None = None,
        on_output: OutputCallback | None = None) -> Ran:
    """Run ``code``; then assert that no process of the run survives and that no per-run
    directory or mount is left under the runtime's scratch directory."""
    marker = uuid.uuid4().hex
    scratch = SANDBOX_DIR / "scratch"
    before = _scratch_state(scratch)
    job = SandboxJob(code, limits, output_dir, env={**(env or {}), "OSPREY_TEST_RUN": marker},
                     broker_fd=broker_fd, files=files or {})
    outcome = asyncio.run(backend.run(job, on_output))
    assert processes_with(marker) == [], "a process of the run survived it"
    assert _scratch_state(scratch) <= before, "the run left its work dir or mount behind"
    return Ran(outcome, output_dir)


def processes_with(marker: str) -> list[int]:
    """Pids whose environment holds ``marker`` (root reads every process's environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _scratch_state(scratch: Path) -> set[str]:
    entries = {f"dir {path.name}" for path in scratch.iterdir()} if scratch.is_dir() else set()
    mounts = {f"mount {line.split()[4]}"
              for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split()[4].startswith(str(scratch))}
    return entries | mounts
