"""Shared by the run/approval CLI tests: a side-effecting test plugin and CLI helpers.

``pulse_magnet`` is a capability with side effects, installed the way pip would, so its
steps stop for approval under the default ``control_writes`` mode. Each ``execute`` appends
a line to ``$PULSE_LOG`` (when set), so a test can count how often the machine was
touched; with ``$PULSE_CRASH`` set the process dies in the middle of the step.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from support.dist import osprey_env, write_distribution

if TYPE_CHECKING:
    from osprey_core.store import RunStore

PULSE_PLUGIN = """
    import os

    from pydantic import BaseModel

    from osprey_core import hookimpl
    from osprey_core.hookspecs.capabilities import Capability


    class PulseParameters(BaseModel):
        amps: float


    class PulseMagnet(Capability):
        name = "pulse_magnet"
        description = "Pulse the test magnet: a write to the machine."
        side_effects = True
        approval_kind = "channel_write"
        parameters = PulseParameters

        def match(self, query):
            return {"amps": 2.5} if "pulse" in query.lower() else None

        async def execute(self, step):
            if os.environ.get("PULSE_LOG"):
                with open(os.environ["PULSE_LOG"], "a", encoding="utf-8") as log:
                    log.write(f"{step.run_id} {step.parameters.amps}\\n")
            if os.environ.get("PULSE_CRASH"):
                os._exit(9)
            return {"pulsed_amps": step.parameters.amps}


    @hookimpl
    def register_capabilities(register):
        register(PulseMagnet())
"""


def pulse_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A strict-plugins environment with the pulse plugin installed and a fresh home."""
    site = tmp_path / "site"
    if not site.exists():
        write_distribution(site, "osprey-plugin-pulse", entry_points={"pulse": "pulse_plugin"},
                           modules={"pulse_plugin": PULSE_PLUGIN})
    return osprey_env(tmp_path / "home", pythonpath=site, OSPREY_STRICT_PLUGINS="1",
                      **settings)


def osprey(*args: str, env: dict[str, str], cwd: Path, stdin: str | None = None,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m osprey_core ARGS`` in a subprocess, optionally fed ``stdin``."""
    return subprocess.run(
        [sys.executable, "-m", "osprey_core", *args], env=env, cwd=cwd, input=stdin,
        capture_output=True, text=True, encoding="utf-8", timeout=timeout, check=False,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def assert_exit(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, (
        f"exit {result.returncode}, expected {code}\n--- stdout\n{result.stdout}"
        f"\n--- stderr\n{result.stderr}")
    assert "Traceback" not in result.stderr + result.stdout


def json_of(*args: str, env: dict[str, str], cwd: Path) -> Any:
    """A ``--json`` command's output, parsed (it must exit 0)."""
    result = osprey(*args, "--json", env=env, cwd=cwd)
    assert_exit(result, 0)
    return json.loads(result.stdout)


class Stored:
    """What the CLI processes left in the store, read directly (faster than a process)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.path = Path(env["OSPREY_HOME"]) / "osprey.db"

    def _read(self, read: Callable[[RunStore], list[Any]]) -> list[dict[str, Any]]:
        from osprey_core.store import RunStore

        store = RunStore(self.path)
        try:
            return [record.model_dump(mode="json") for record in read(store)]
        finally:
            store.close()

    def approvals(self) -> dict[str, dict[str, Any]]:
        """Every approval request, by id (oldest first)."""
        return {record["id"]: record for record in self._read(lambda s: s.list_approvals())}

    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first."""
        return self._read(lambda s: s.list_runs(limit=1000))

    def audit(self) -> list[dict[str, Any]]:
        return self._read(lambda s: s.audit())
