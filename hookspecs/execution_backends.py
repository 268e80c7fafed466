"""Execution backends: where generated code actually runs (``nsjail`` by default).

The backend is the security boundary for generated code. ``isolated = False`` marks a
backend without isolation (``local``, for development); the execution service refuses it
for write mode and says so loudly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from osprey_core.hookspecs import hookspec

if TYPE_CHECKING:
    from osprey_core.settings import ExecutionSettings, SandboxLimits

#: Exit status the in-jail bootstrap uses when the code ran out of memory (MemoryError).
EXIT_CODE_MEMORY = 90
#: Exit status the in-jail bootstrap uses when the CPU-time limit was reached (SIGXCPU).
EXIT_CODE_CPU = 91
#: Where the jail sees its work directory (the code, results and figures live there).
JAIL_WORK_DIR = "/work"
#: The descriptor number the broker socket has inside the jail.
BROKER_FD = 3


class ExitReason(StrEnum):
    """Why a sandboxed run ended."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CPU = "cpu"
    MEMORY = "memory"
    OUTPUT_CAP = "output_cap"
    DISK_FULL = "disk_full"
    START_FAILED = "start_failed"


@dataclass(frozen=True)
class SandboxJob:
    """One execution: the code, its limits, and where its files go afterwards."""

    #: The code to run; written to ``code.py`` in the work directory.
    code: str
    limits: SandboxLimits
    #: Host directory that receives the work directory's regular files after the run
    #: (copied without following symlinks, see :func:`osprey_core.sandbox.collect.copy_out`).
    output_dir: Path
    #: Extra environment for the code; the rest of the environment is clean (no host secrets).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Host socket descriptor handed to the jail as :data:`BROKER_FD` (``None``: no broker).
    broker_fd: int | None = None
    #: Extra input files placed in the work directory before the run.
    files: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class SandboxOutcome:
    """What happened, with output capped at ``limits.output_bytes``."""

    exit_reason: ExitReason
    returncode: int | None
    stdout: str
    stderr: str
    output_truncated: bool
    wall_seconds: float
    backend: str
    isolated: bool
    #: Degradations and facts worth showing (e.g. "work dir quota not enforced: not root").
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_reason": str(self.exit_reason), "returncode": self.returncode,
            "output_truncated": self.output_truncated, "wall_seconds": self.wall_seconds,
            "backend": self.backend, "isolated": self.isolated, "notes": list(self.notes),
        }


@dataclass(frozen=True)
class CheckItem:
    """One line of ``osprey sandbox check``."""

    name: str
    ok: bool
    detail: str


#: ``on_output(stream, text)`` receives output as it arrives (``stream`` is stdout/stderr).
OutputCallback = Callable[[str, str], None]


class ExecutionBackend(ABC):
    """Runs a :class:`SandboxJob`. Registered as a class, built with the execution settings."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: False for backends without isolation: never used for write mode.
    isolated: ClassVar[bool] = True

    def __init__(self, settings: ExecutionSettings, home: Path) -> None:
        self.settings = settings
        self.home = home

    @abstractmethod
    async def run(self, job: SandboxJob, on_output: OutputCallback | None = None) -> SandboxOutcome:
        """Run the job to the end (or its limits), kill every process it started, copy its
        files to ``job.output_dir`` and report. Never raises for a failure of the code."""

    def check(self) -> list[CheckItem]:
        """What works on this machine (for ``osprey sandbox check``)."""
        return []


@hookspec
def register_execution_backends(register: Callable[[type[ExecutionBackend]], None]) -> None:
    """Register execution-backend classes by calling ``register(BackendClass)`` for each."""
