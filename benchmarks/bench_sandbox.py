"""Sandbox overhead: a sandboxed run of ``pass`` against a bare ``python -c pass``.

Both sides use the same interpreter (the jail's is a copy of the one running osprey). The
sandboxed side is the whole ``NsjailBackend.run``: a per-run tmpfs work dir mounted and
removed, nsjail with its namespaces, seccomp policy and limits, the bootstrap running
``code.py``, and the copy-out of the work dir. The two sides take turns, run by run, so
load from other jobs on the machine weighs on both alike. Target (issue 5): overhead
<= 15 ms median. The ``podman`` backend (a container per run) is measured the same way
beside it, with fewer runs (about 0.3 s each), when podman is installed.

Needs the ``sandbox`` extra, root, and a prepared runtime (``osprey sandbox setup``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_OVERHEAD_MS = 15.0
WARMUP_RUNS = 3


async def measure(python: str, runs: int,
                  backend_name: str = "nsjail") -> tuple[list[float], list[float]]:
    """Milliseconds of ``runs`` bare and sandboxed runs, alternating, after a warm-up."""
    from osprey_core.hookspecs.execution_backends import ExitReason, SandboxJob
    from osprey_core.sandbox.nsjail_backend import NsjailBackend
    from osprey_core.sandbox.podman_backend import PodmanBackend
    from osprey_core.settings import ExecutionSettings

    settings = ExecutionSettings()
    backend_class = PodmanBackend if backend_name == "podman" else NsjailBackend
    backend = backend_class(settings, Path(tempfile.gettempdir()))
    bare: list[float] = []
    jailed: list[float] = []
    with tempfile.TemporaryDirectory(prefix="osprey-bench-") as tmp:
        for index in range(WARMUP_RUNS + runs):
            started = time.perf_counter()
            subprocess.run([python, "-I", "-c", "pass"], check=True)
            bare.append((time.perf_counter() - started) * 1000)
            job = SandboxJob("pass\n", settings.limits, Path(tmp) / f"run-{index}")
            started = time.perf_counter()
            outcome = await backend.run(job)
            jailed.append((time.perf_counter() - started) * 1000)
            if outcome.exit_reason is not ExitReason.OK:
                sys.exit(f"sandboxed pass failed: {outcome.exit_reason}: {outcome.stderr}")
    return bare[WARMUP_RUNS:], jailed[WARMUP_RUNS:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="measured runs per side")
    args = parser.parse_args()
    python = getattr(sys, "_base_executable", sys.executable)
    bare_times, jailed_times = asyncio.run(measure(python, args.runs))
    bare, jailed = statistics.median(bare_times), statistics.median(jailed_times)
    overhead = jailed - bare
    verdict = "met" if overhead <= TARGET_OVERHEAD_MS else "MISSED"
    print(f"sandbox: bare `python -I -c pass` median {bare:.1f} ms; sandboxed `pass` median "
          f"{jailed:.1f} ms ({jailed / bare:.2f}x)")
    print(f"sandbox: overhead {overhead:.1f} ms, target <= {TARGET_OVERHEAD_MS:.0f} ms: {verdict}")
    if shutil.which("podman") is None:
        print("sandbox: podman not installed; podman backend not measured")
        return
    bare_times, podman_times = asyncio.run(measure(python, max(5, args.runs // 4), "podman"))
    bare, contained = statistics.median(bare_times), statistics.median(podman_times)
    print(f"sandbox: podman backend `pass` median {contained:.1f} ms, overhead "
          f"{contained - bare:.1f} ms over bare (nsjail's: {overhead:.1f} ms)")


if __name__ == "__main__":
    main()
