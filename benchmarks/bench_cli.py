"""How fast and small is ``osprey --help`` with every plugin loaded?

Baseline (issue 2): the reference framework takes 1.8 s and 89 MB to print ``--help``.
Targets: median wall time <= 0.25 s and peak RSS <= 45 MB. ``python -c pass`` on the
same interpreter is printed beside it as the floor no CLI can beat.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

REFERENCE_SECONDS, REFERENCE_MB = 1.8, 89.0
TARGET_SECONDS, TARGET_MB = 0.25, 45.0


def measure(argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall seconds and max peak RSS (MB) of ``argv`` over ``runs`` runs."""
    walls, peaks = [], []
    for _ in range(runs):
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        walls.append(time.perf_counter() - start)
        peaks.append(usage.ru_maxrss / 1024)  # Linux reports KiB
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{argv} failed: {process.stderr.read().decode() if process.stderr else ''}")
    return statistics.median(walls), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    osprey = shutil.which("osprey")
    if osprey is None:
        sys.exit("the osprey console script is not on PATH; install the project first")
    listing = subprocess.run([osprey, "plugins", "--json"], capture_output=True, text=True,
                             check=True).stdout
    measure([osprey, "--help"], 2)  # warm the page cache and bytecode
    floor_s, floor_mb = measure([sys.executable, "-c", "pass"], args.runs)
    help_s, help_mb = measure([osprey, "--help"], args.runs)
    loaded = listing.count('"status": "loaded"')
    print(f"osprey --help with {loaded} plugins loaded, {args.runs} runs")
    print(f"{'':24}{'median s':>10}{'peak MB':>10}")
    print(f"{'python -c pass':24}{floor_s:10.3f}{floor_mb:10.1f}")
    print(f"{'osprey --help':24}{help_s:10.3f}{help_mb:10.1f}")
    print(f"{'reference --help':24}{REFERENCE_SECONDS:10.3f}{REFERENCE_MB:10.1f}")
    print(f"speed-up vs reference: {REFERENCE_SECONDS / help_s:.1f}x time, "
          f"{REFERENCE_MB / help_mb:.1f}x memory; over python -c pass: "
          f"+{(help_s - floor_s) * 1000:.0f} ms, +{help_mb - floor_mb:.1f} MB")
    verdict = help_s <= TARGET_SECONDS and help_mb <= TARGET_MB
    print(f"target <= {TARGET_SECONDS} s and <= {TARGET_MB:.0f} MB: "
          f"{'met' if verdict else 'MISSED'}")


if __name__ == "__main__":
    main()
