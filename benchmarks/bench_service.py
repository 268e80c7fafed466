"""Approvals over HTTP: decisions per second and approve -> done latency of ``osprey serve``.

Starts ``osprey serve`` (uvicorn on a free loopback port) over a temporary home with a
simulated machine whose corrector HCM1:SP is writable, so ``set HCM1:SP to 0.5 A`` pauses
for a write approval. Two API tokens are made first: an operator who asks and an approver
who decides (separation of duties keeps them apart).

* HTTP: ``--clients`` (8) concurrent httpx clients each submit ``--runs`` (25) runs
  (``POST /api/v1/runs``, each answered once the run has paused); one approver client
  approves every pause as it arrives (``POST /api/v1/approvals/{id}/approve`` with the
  sha256 it was shown, as many requests in flight as there are submitters). The approve
  call answers when the run has ended: its duration is "approve -> done".
* Baseline, in process: one ``Osprey`` over its own temporary home, ``run`` then
  ``approve``, one run after the other (one ``Osprey`` moves one run at a time; so does
  the server, which holds one lock around every call that moves a run).

Printed for each: decisions per second over the whole workload (submitting included),
and the median and p99 of approve -> done; then HTTP / in-process as ratios. Every run
must pause for a channel_write approval and end ``done`` with the value verified,
otherwise the benchmark stops with an error.

Needs the ``serve`` extra (``pip install 'osprey-core[serve]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

QUERY = "set HCM1:SP to 0.5 A"
MACHINE = {
    "OSPREY__CONTROL_SYSTEM__WRITES_ENABLED": "true",
    "OSPREY__CONTROL_SYSTEM__LIMITS": '{channels: {"HCM1:SP": {writable: true, type: float, '
                                      'min: -5.0, max: 5.0}}}',
}
START_TIMEOUT = 60.0


@dataclass
class Figures:
    """One side's measurements: approve -> done durations and the workload's wall time."""

    name: str
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    def p99_ms(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000


def machine_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OSPREY")}
    return {**env, **MACHINE, "OSPREY_HOME": str(home)}


def make_tokens(home: Path) -> tuple[str, str]:
    """An operator's and an approver's token, made in the home's store."""
    from osprey_core.service.settings import Role
    from osprey_core.service.tokens import TokenStore
    from osprey_core.store import RunStore

    home.mkdir(parents=True, exist_ok=True)
    store = RunStore(home / "osprey.db")
    try:
        tokens = TokenStore(store)
        _, operator = tokens.create("bench-operator", [Role.OPERATOR], created_by="bench")
        _, approver = tokens.create("bench-approver", [Role.APPROVER], created_by="bench")
    finally:
        store.close()
    return operator, approver


@contextmanager
def serving(home: Path) -> Iterator[str]:
    """``osprey serve --port 0`` over ``home``; its URL. Stopped with SIGINT."""
    log = home.parent / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "osprey_core", "serve", "--port", "0"],
                                   env=machine_env(home), cwd=home.parent, stdout=sink,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield _wait_for_url(process, log)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_url(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(encoding="utf-8", errors="replace")
        if process.poll() is not None:
            sys.exit(f"osprey serve exited {process.returncode}:\n{text}")
        if found := re.search(r"osprey serving (http://\S+)", text):
            try:
                if httpx.get(f"{found.group(1)}/healthz", timeout=2).status_code == 200:
                    return found.group(1)
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    sys.exit(f"osprey serve did not start in {START_TIMEOUT} s")


def check_paused(run: dict[str, Any]) -> dict[str, Any]:
    approval = run.get("approval") or {}
    if run.get("state") != "awaiting_step_approval" or approval.get("action") != "channel_write":
        sys.exit(f"a run did not pause for a channel_write approval: {run.get('state')} "
                 f"{run.get('error') or ''}")
    return approval


def check_done(state: str, context: dict[str, Any], error: str | None) -> None:
    writes = context.get("channel_write") or [{}]
    if state != "done" or not writes[0].get("verified"):
        sys.exit(f"an approved run did not end done with its write verified: {state} "
                 f"{error or ''} {writes}")


async def over_http(url: str, operator: str, approver: str, clients: int,
                    runs: int) -> Figures:
    """``clients`` submitters and one approver client, all at once."""
    figures = Figures("HTTP")
    pending: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    limits = httpx.Limits(max_connections=clients)
    timeout = httpx.Timeout(120.0)

    async def submitter() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=timeout, headers={
                "Authorization": f"Bearer {operator}"}) as client:
            for _ in range(runs):
                response = await client.post("/api/v1/runs", json={"query": QUERY})
                response.raise_for_status()
                await pending.put(check_paused(response.json()))

    async def deciding(client: httpx.AsyncClient) -> None:
        while (approval := await pending.get()) is not None:
            started = time.perf_counter()
            response = await client.post(f"/api/v1/approvals/{approval['id']}/approve",
                                         json={"sha256": approval["artifact_sha256"]})
            figures.latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            run = response.json()
            check_done(run["state"], run["context"], run.get("error"))

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits, headers={
            "Authorization": f"Bearer {approver}"}) as approving:
        deciders = [asyncio.create_task(deciding(approving)) for _ in range(clients)]
        await asyncio.gather(*(submitter() for _ in range(clients)))
        for _ in deciders:
            await pending.put(None)
        await asyncio.gather(*deciders)
    figures.elapsed = time.perf_counter() - started
    return figures


def in_process(home: Path, count: int, warmup: int) -> Figures:
    """The same work through the ``Osprey`` API in this process, one run at a time."""
    from osprey_core import Osprey

    os.environ.update(MACHINE)
    os.environ["OSPREY_HOME"] = str(home)
    figures = Figures("in process")
    with Osprey() as osprey:
        for index in range(warmup + count):
            if index == warmup:
                figures.latencies.clear()
                begun = time.perf_counter()
            run = osprey.run(QUERY, user="bench-operator")
            approval = check_paused({**run.model_dump(mode="json"), "approval":
                                     osprey.approval(run.approval_id or "").model_dump()})
            started = time.perf_counter()
            done = osprey.approve(approval["id"], user="bench-approver")
            figures.latencies.append(time.perf_counter() - started)
            check_done(str(done.state), done.context, done.error)
        figures.elapsed = time.perf_counter() - begun
    return figures


def report(http: Figures, local: Figures, clients: int) -> None:
    print(f"{'':<28} {'decisions/s':>12} {'approve->done p50':>18} {'p99':>9}")
    for figures, label in ((http, f"HTTP, {clients} clients"), (local, "in process (baseline)")):
        print(f"{label:<28} {figures.rate():>12.1f} {figures.p50_ms():>15.1f} ms "
              f"{figures.p99_ms():>6.1f} ms   ({len(figures.latencies)} decisions)")
    print(f"HTTP / in process: {http.rate() / local.rate():.2f}x the decisions per second, "
          f"{http.p50_ms() / local.p50_ms():.1f}x the median approve->done "
          "(queued behind the other clients' calls)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent submitting clients")
    parser.add_argument("--runs", type=int, default=25, help="runs per client")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    args = parser.parse_args()
    if args.clients < 1 or args.runs < 1:
        parser.error("--clients and --runs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="osprey-bench-service-") as tmp:
        home = Path(tmp) / "serve"
        operator, approver = make_tokens(home)
        with serving(home) as url:
            asyncio.run(over_http(url, operator, approver, 1, args.warmup))
            http = asyncio.run(over_http(url, operator, approver, args.clients, args.runs))
        local = in_process(Path(tmp) / "local", args.clients * args.runs, args.warmup)
    report(http, local, args.clients)


if __name__ == "__main__":
    main()
