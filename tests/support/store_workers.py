"""Worker processes sharing one store (see :mod:`support.store_worker`), driven from the
test or benchmark: each answers its commands in order; several answer at the same time.

The simulated machine's setpoint log (``mock-machine.json`` in the shared home) is what
every write did: :func:`written_values` reads it back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("store_worker.py")
CHANNEL = "HCM1:SP"


def machine_env(home: Path, store_url: str | None, **extra: str) -> dict[str, str]:
    """Every worker's environment: one home (the simulated machine's state lives there),
    one writable corrector, one store (``store_url``; ``None`` for the home's SQLite)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OSPREY")}
    env.update(OSPREY_HOME=str(home), OSPREY_STRICT_PLUGINS="1",
               OSPREY__CONTROL_SYSTEM__WRITES_ENABLED="true",
               OSPREY__CONTROL_SYSTEM__LIMITS='{channels: {"HCM1:SP": {writable: true, '
                                             'type: float, min: -5.0, max: 5.0}}}', **extra)
    if store_url is not None:
        env["OSPREY__STORE__URL"] = store_url
    return env


class Worker:
    """One worker process; ``send`` then ``receive`` (several workers may be sent to before
    any is received from, so they work at the same time)."""

    def __init__(self, env: Mapping[str, str], name: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT)], env={**env, "OSPREY_WORKER_HOST": name},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1)
        ready = self.receive()
        assert ready == {"ready": True}, ready

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} ended (exit {self.process.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        self.send(command)
        return self.receive()

    def kill(self) -> None:
        """kill -9: no cleanup of any kind."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send({"op": "exit"})
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()


def query(value: float) -> str:
    return f"set {CHANNEL} to {value:.3f} A"


def value_of(index: int) -> float:
    """A distinct setpoint per run, inside the corrector's limits."""
    return round(-4.5 + index * 0.004, 3)


def written_values(home: Path) -> list[float]:
    """Every value written to the corrector, in order, from the setpoint log."""
    path = home / "mock-machine.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    return [round(float(item["value"]), 3) for item in data["setpoints"]
            if item["channel"] == CHANNEL]
