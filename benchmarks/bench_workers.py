"""Workers sharing a store: decisions per second and approve -> done latency, one worker
on SQLite beside one, two and four workers on one PostgreSQL database.

Each configuration gets a fresh home and store and a simulated machine whose corrector
HCM1:SP is writable, so every request (``set HCM1:SP to X A``, a distinct X per run)
pauses for one write approval. The workers (``tests/support/store_worker.py``, each posing
as its own host, so they hold runs by lease) first submit ``--runs`` requests between
them; then every worker approves its share, one after the other, while the others do the
same (a driver thread per worker sends an approval and waits for its answer). The answer
comes when the run has ended, so its round trip is "approve -> done". The writes are
checked on the simulated machine's setpoint log: each approved value exactly once.

PostgreSQL is Debian's 15, started here as the tests start it but with ``fsync`` on (SQLite
syncs decisions and side effects too); both are on this machine's local disk.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.postgres import shared_database, start_server
from support.store_workers import (
    Worker,
    machine_env,
    query,
    value_of,
    written_values,
)


def submit(workers: list[Worker], runs: int) -> tuple[list[float], list[list[str]]]:
    """Submit ``runs`` pausing requests round-robin; each worker's share of approvals."""
    values = [value_of(index) for index in range(runs)]
    shares: list[list[str]] = [[] for _ in workers]
    for index, value in enumerate(values):
        workers[index % len(workers)].send({"op": "run", "query": query(value)})
    for index in range(runs):
        reply = workers[index % len(workers)].receive()
        if not (reply["ok"] and reply["state"] == "awaiting_step_approval"):
            raise SystemExit(f"a run did not pause for its approval: {reply}")
        shares[index % len(workers)].append(reply["approval"])
    return values, shares


def approve(worker: Worker, approval: str) -> float:
    """One approval's round trip: the answer comes when the run has ended."""
    started = time.perf_counter()
    reply = worker.ask({"op": "approve", "approval": approval})
    if not (reply["ok"] and reply["state"] == "done"):
        raise SystemExit(f"an approved run did not end done: {reply}")
    return time.perf_counter() - started


def saturated(workers: list[Worker], shares: list[list[str]]) -> list[float]:
    """Every worker approves its share back to back, all workers at once."""
    latencies: list[float] = []
    lock = threading.Lock()

    def drive(worker: Worker, approvals: list[str]) -> None:
        for approval in approvals:
            took = approve(worker, approval)
            with lock:
                latencies.append(took)

    threads = [threading.Thread(target=drive, args=pair)
               for pair in zip(workers, shares, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def paced(workers: list[Worker], shares: list[list[str]], interval: float) -> list[float]:
    """One approval every ``interval`` seconds, through the workers in turn."""
    order = [(worker, approval) for row in zip(*shares, strict=False)
             for worker, approval in zip(workers, row, strict=True)]
    start, latencies = time.perf_counter(), []
    for index, (worker, approval) in enumerate(order):
        time.sleep(max(0.0, start + index * interval - time.perf_counter()))
        latencies.append(approve(worker, approval))
    return latencies


def measure(workers: list[Worker], home: Path, runs: int,
            interval: float | None) -> dict[str, float]:
    """Submit ``runs`` pausing requests, then approve them all through ``workers``."""
    values, shares = submit(workers, runs)
    started = time.perf_counter()
    latencies = (saturated(workers, shares) if interval is None
                 else paced(workers, shares, interval))
    elapsed = time.perf_counter() - started
    if len(latencies) != runs or Counter(written_values(home)) != Counter(values):
        raise SystemExit("the setpoint log does not hold each approved write exactly once")
    cuts = statistics.quantiles(latencies, n=100)
    return {"rate": runs / elapsed, "p50": cuts[49] * 1000, "p99": cuts[98] * 1000}


def configuration(url: str | None, count: int, runs: int,
                  interval: float | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="osprey-bench-workers-") as tmp, ExitStack() as stack:
        home = Path(tmp) / "home"
        env = machine_env(home, url)
        workers = []
        for number in range(count):
            worker = Worker(env, f"bench-host-{number}")
            stack.callback(worker.stop)
            workers.append(worker)
        return measure(workers, home, runs, interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400,
                        help="runs per configuration, approved as fast as they can be")
    parser.add_argument("--paced-runs", type=int, default=20,
                        help="runs per configuration approved one per second")
    args = parser.parse_args()
    phases = {"paced": (args.paced_runs, 1.0), "saturated": (args.runs, None)}
    results: dict[str, dict[str, dict[str, float]]] = {phase: {} for phase in phases}
    server = start_server(fsync=True)
    try:
        for phase, (runs, interval) in phases.items():
            results[phase]["SQLite, 1 worker"] = configuration(None, 1, runs, interval)
            for count in (1, 2, 4):
                with shared_database(server) as url:
                    label = f"PostgreSQL, {count} worker{'s' if count > 1 else ''}"
                    results[phase][label] = configuration(url, count, runs, interval)
    finally:
        server.ctl("stop", check=False)
        shutil.rmtree(server.directory, ignore_errors=True)
    print(f"approve -> done, one write approval per run: {args.paced_runs} runs approved one "
          f"per second (paced) and {args.runs} approved back to back (saturated)")
    print(f"{'store':<24} {'paced p50':>10} {'p99 ms':>8}   {'saturated/s':>11} "
          f"{'p50 ms':>8} {'p99 ms':>8}")
    for label, slow in results["paced"].items():
        fast = results["saturated"][label]
        print(f"{label:<24} {slow['p50']:>10.1f} {slow['p99']:>8.1f}   {fast['rate']:>11.1f} "
              f"{fast['p50']:>8.1f} {fast['p99']:>8.1f}")


if __name__ == "__main__":
    main()
