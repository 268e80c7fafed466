"""Sandbox overhead: a sandboxed run of ``pass`` against a bare ``python -c pass``.

Both sides use the same interpreter (the jail's is a copy of the one running osprey). The
sandboxed side is the whole ``NsjailBackend.run``: a per-run tmpfs work dir mounted and
removed, nsjail with its namespaces, seccomp policy and limits, the bootstrap running
``code.py``, and the copy-out of the work dir. Target (issue 5): overhead <= 15 ms median.

Needs the ``sandbox`` extra, root, and a prepared runtime (``osprey sandbox setup``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_OVERHEAD_MS = 15.0


def bare_pass_ms(python: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([python, "-I", "-c", "pass"], check=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def sandboxed_pass_ms(runs: int) -> list[float]:
    from osprey_core.hookspecs.execution_backends import ExitReason, SandboxJob
    from osprey_core.sandbox.nsjail_backend import NsjailBackend
    from osprey_core.settings import ExecutionSettings

    settings = ExecutionSettings()
    backend = NsjailBackend(settings, Path(tempfile.gettempdir()))
    times = []
    with tempfile.TemporaryDirectory(prefix="osprey-bench-") as tmp:
        for index in range(runs):
            job = SandboxJob("pass\n", settings.limits, Path(tmp) / f"run-{index}")
            started = time.perf_counter()
            outcome = await backend.run(job)
            times.append((time.perf_counter() - started) * 1000)
            if outcome.exit_reason is not ExitReason.OK:
                sys.exit(f"sandboxed pass failed: {outcome.exit_reason}: {outcome.stderr}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="measured runs per side")
    args = parser.parse_args()
    python = getattr(sys, "_base_executable", sys.executable)
    bare_pass_ms(python, 3)  # warm the page cache
    asyncio.run(sandboxed_pass_ms(3))
    bare = statistics.median(bare_pass_ms(python, args.runs))
    jailed = statistics.median(asyncio.run(sandboxed_pass_ms(args.runs)))
    overhead = jailed - bare
    verdict = "met" if overhead <= TARGET_OVERHEAD_MS else "MISSED"
    print(f"sandbox: bare `python -I -c pass` median {bare:.1f} ms; sandboxed `pass` median "
          f"{jailed:.1f} ms ({jailed / bare:.2f}x)")
    print(f"sandbox: overhead {overhead:.1f} ms, target <= {TARGET_OVERHEAD_MS:.0f} ms: {verdict}")


if __name__ == "__main__":
    main()
