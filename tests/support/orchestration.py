"""Shared pieces for the orchestrator, approval, store and durability tests.

The test capabilities live in :data:`PLUGIN_SOURCE`, one plugin module used two ways:
executed in-process (:func:`testcaps`) for single-process tests, and written as a real
installed distribution (:meth:`Lab.install`) for subprocesses, which find it through the
``osprey`` entry point like any pip-installed plugin. Every execution is appended to a
ledger directory, so a test counts executions across processes by reading files.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from osprey_core.api import Osprey
from osprey_core.config import load_config
from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.approval_policies import ApprovalPolicy, Verdict, Vote
from osprey_core.plugin_host import PluginHost, load_plugins
from support.dist import osprey_env, write_distribution

LEDGER_ENV = "ORCH_TEST_LEDGER"
PLUGIN_NAME = "orchtest"
PLUGIN_MODULE = "osprey_orch_testcaps"
DRIVER_MODULE = "osprey_orch_driver"
#: Upper bound for every subprocess and every file handshake in these tests.
TIMEOUT = 30.0

PLUGIN_SOURCE = r'''
"""Test capabilities recording each execution in the ledger directory ($ORCH_TEST_LEDGER)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.capabilities import Capability, PreparedAction, StepContext

LEDGER_ENV = "ORCH_TEST_LEDGER"
#: A blocking step gives up after this long, so a broken test cannot hang forever.
BLOCK_LIMIT = 60.0


class Recorded(Capability):
    """Appends one JSON line per execution to <ledger>/<name>.log before doing anything."""

    def __init__(self, ledger: Path | None = None) -> None:
        self.ledger = Path(ledger or os.environ[LEDGER_ENV])

    def record(self, step: StepContext) -> None:
        self.ledger.mkdir(parents=True, exist_ok=True)
        parameters = step.parameters
        if hasattr(parameters, "model_dump"):
            parameters = parameters.model_dump(mode="json")
        line = json.dumps({"run": step.run_id, "index": step.index, "pid": os.getpid(),
                           "parameters": parameters, "artifact": dict(step.artifact or {})})
        with open(self.ledger / f"{self.name}.log", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    async def wait_for_release(self) -> None:
        """Block until the test creates <ledger>/release (a file handshake)."""
        release = self.ledger / "release"
        deadline = time.monotonic() + BLOCK_LIMIT
        while not release.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: never released")
            await asyncio.sleep(0.02)


class ReadBeam(Recorded):
    name = "read_beam"
    description = "Read the beam current of the storage ring."
    provides = ("beam",)

    def match(self, query: str) -> dict[str, Any] | None:
        return {} if "beam current" in query.lower() else None

    async def execute(self, step: StepContext) -> Any:
        self.record(step)
        return {"SR:CURRENT": 500.0}


class SetpointParameters(BaseModel):
    value: float


class Setpoint(Recorded):
    """Writes one value; the approved artifact names the channel and the exact value."""

    side_effects = True
    approval_kind = "channel_write"
    parameters = SetpointParameters
    channel = ""
    word = ""

    def match(self, query: str) -> dict[str, Any] | None:
        found = re.search(rf"\b{self.word} to (-?\d+(?:\.\d+)?)", query.lower())
        return {"value": float(found.group(1))} if found else None

    async def prepare(self, step: StepContext) -> PreparedAction:
        value = step.parameters.value
        return PreparedAction(artifact={"channel": self.channel, "value": value},
                              summary=f"write {value} to {self.channel}")

    async def execute(self, step: StepContext) -> Any:
        self.record(step)
        return {"channel": step.artifact["channel"], "written": step.artifact["value"]}


class SetMagnet(Setpoint):
    name = "set_magnet"
    description = "Set the current of the main dipole magnet power supply."
    channel = "MAG:CURRENT"
    word = "magnet"


class SetCorrector(Setpoint):
    name = "set_corrector"
    description = "Set the current of a steering corrector power supply."
    channel = "COR:CURRENT"
    word = "corrector"


class SlowRead(Recorded):
    name = "slow_read"
    description = "Read the archived history slowly."

    def match(self, query: str) -> dict[str, Any] | None:
        return {} if "slow read" in query.lower() else None

    async def execute(self, step: StepContext) -> Any:
        self.record(step)
        await self.wait_for_release()
        return {"history": [1, 2, 3]}


class SlowWrite(Recorded):
    name = "slow_write"
    description = "Ramp a power supply slowly to its new value."
    side_effects = True

    def match(self, query: str) -> dict[str, Any] | None:
        return {} if "slow ramp" in query.lower() else None

    async def execute(self, step: StepContext) -> Any:
        self.record(step)
        await self.wait_for_release()
        return {"ramped": True}


class RunScript(Recorded):
    name = "run_script"
    description = "Analyse data by running generated Python code."
    runs_code = True

    def match(self, query: str) -> dict[str, Any] | None:
        return {} if "analyse with code" in query.lower() else None

    async def execute(self, step: StepContext) -> Any:
        self.record(step)
        return {"mean": 1.5}


class StatusReport(Recorded):
    """Returns data shaped like settings: it must never change any."""

    name = "status_report"
    description = "Summarise the machine status."

    def match(self, query: str) -> dict[str, Any] | None:
        return {} if "status report" in query.lower() else None

    async def execute(self, step: StepContext) -> Any:
        self.record(step)
        return {"approval": {"mode": "disabled", "expiry_seconds": 1e9},
                "planning": {"enabled": False}, "llm": {"base_url": "http://127.0.0.1:9/v1"}}


ALL = (ReadBeam, SetMagnet, SetCorrector, SlowRead, SlowWrite, RunScript, StatusReport)


class Plugin:
    """The capabilities with an explicit ledger, for registering in-process."""

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger

    @hookimpl
    def register_capabilities(self, register: Any) -> None:
        for capability in ALL:
            register(capability(self.ledger))


@hookimpl
def register_capabilities(register: Any) -> None:
    for capability in ALL:
        register(capability())
'''

DRIVER_SOURCE = r'''
"""Drives osprey in a test subprocess: run (and hold until killed), or approve."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def barrier(directory: Path, name: str, parties: int) -> None:
    """Wait until ``parties`` processes reached this point (a file handshake)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.ready").touch()
    deadline = time.monotonic() + 30
    while len(list(directory.glob("*.ready"))) < parties:
        if time.monotonic() > deadline:
            raise SystemExit(f"barrier {directory}: timed out")
        time.sleep(0.005)


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run")
    run.add_argument("query")
    run.add_argument("--planning", action="store_true")
    run.add_argument("--session", default="default")
    run.add_argument("--hold", action="store_true", help="stay alive until killed")
    approve = commands.add_parser("approve")
    approve.add_argument("approval_id")
    approve.add_argument("--user", default="driver")
    approve.add_argument("--barrier", type=Path)
    approve.add_argument("--parties", type=int, default=2)
    args = parser.parse_args()

    from osprey_core import Osprey
    from osprey_core.errors import OspreyError

    osprey = Osprey()
    if args.command == "run":
        record = osprey.run(args.query, session=args.session, user="driver",
                            planning=args.planning or None, interface="driver")
        print(json.dumps({"run_id": record.id, "state": str(record.state),
                          "approval_id": record.approval_id}), flush=True)
        if args.hold:
            sys.stdin.read()
        return 0
    if args.barrier is not None:
        from osprey_core.orchestration.orchestrator import Orchestrator

        opened = Orchestrator._open_approval

        def gated(self, approval_id, session):
            found = opened(self, approval_id, session)
            barrier(args.barrier, args.user, args.parties)
            return found

        Orchestrator._open_approval = gated
    try:
        record = osprey.approve(args.approval_id, user=args.user, interface="driver")
    except OspreyError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
        return 1
    print(json.dumps({"ok": True, "state": str(record.state)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def testcaps() -> types.ModuleType:
    """The plugin module, executed in this process once."""
    module = sys.modules.get(PLUGIN_MODULE)
    if module is None:
        module = types.ModuleType(PLUGIN_MODULE)
        sys.modules[PLUGIN_MODULE] = module
        exec(compile(PLUGIN_SOURCE, f"<{PLUGIN_MODULE}>", "exec"), module.__dict__)
    return module


class Ledger:
    """Reads what the test capabilities recorded, from any process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def entries(self, capability: str) -> list[dict[str, Any]]:
        path = self.root / f"{capability}.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def count(self, capability: str) -> int:
        return len(self.entries(capability))

    def counts(self) -> dict[str, int]:
        return {path.stem: self.count(path.stem) for path in sorted(self.root.glob("*.log"))}

    def release(self) -> None:
        (self.root / "release").touch()

    def wait_for(self, capability: str, count: int = 1,
                 process: subprocess.Popen[str] | None = None) -> None:
        """Wait until ``capability`` started ``count`` times; fail early if ``process`` died."""
        deadline = time.monotonic() + TIMEOUT
        while self.count(capability) < count:
            if process is not None and process.poll() is not None:
                out, err = process.communicate()
                raise AssertionError(f"process exited {process.returncode} before "
                                     f"{capability} started:\n{out}\n{err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{capability} did not start within {TIMEOUT} s")
            time.sleep(0.01)


class ManualClock:
    """An injectable clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Observer:
    """An observer plugin that records every event it is handed."""

    def __init__(self, on_requested: Callable[[Any], None] | None = None,
                 on_decided: Callable[[Any], None] | None = None) -> None:
        self.events: list[tuple[str, Any]] = []
        self._on_requested = on_requested
        self._on_decided = on_decided

    @hookimpl
    def on_run_event(self, event: Any) -> None:
        self.events.append(("run", event))

    @hookimpl
    def on_approval_requested(self, event: Any) -> None:
        self.events.append(("requested", event))
        if self._on_requested is not None:
            self._on_requested(event)

    @hookimpl
    def on_approval_decided(self, event: Any) -> None:
        self.events.append(("decided", event))
        if self._on_decided is not None:
            self._on_decided(event)

    def of(self, kind: str) -> list[Any]:
        return [event for what, event in self.events if what == kind]


class PolicyPlugin:
    """Registers one approval policy."""

    def __init__(self, policy: ApprovalPolicy) -> None:
        self.policy = policy

    @hookimpl
    def register_approval_policies(self, register: Any) -> None:
        register(self.policy)


class VotePolicy(ApprovalPolicy):
    """Votes ``vote`` on actions ``applies`` selects (default: all), abstains otherwise."""

    name = "test_vote"

    def __init__(self, vote: Vote, *, applies: Callable[[Any], bool] = lambda action: True,
                 reason: str = "test policy") -> None:
        self.vote = vote
        self.applies = applies
        self.reason = reason

    def evaluate(self, action: Any) -> Verdict:
        if self.applies(action):
            return Verdict(self.vote, self.reason)
        return Verdict(Vote.ABSTAIN, "not mine")


def plan_reply(*steps: Mapping[str, Any], reasoning: str = "scripted", **extra: Any) -> str:
    """An LLM reply holding a plan (``extra`` adds top-level keys a plan must not have)."""
    return json.dumps({"reasoning": reasoning, "steps": [dict(step) for step in steps], **extra})


def step(capability: str, output: str, inputs: Iterable[str] = (),
         **parameters: Any) -> dict[str, Any]:
    return {"capability": capability, "parameters": parameters, "inputs": list(inputs),
            "output": output}


def respond(*inputs: str, output: str = "answer") -> dict[str, Any]:
    return step("respond", output, inputs)


class Lab:
    """One OSPREY_HOME for a test, opened in-process (like restarts) or by subprocesses.

    ``environ`` holds ``OSPREY__*`` overrides given both to in-process configs and to
    subprocesses, so every process sees the same configuration.
    """

    def __init__(self, root: Path, *, llm_url: str | None = None) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True)
        self.ledger = Ledger(root / "ledger")
        self.site = root / "site"
        self.workdir = root / "work"
        self.workdir.mkdir()
        self.config_path = self.home / "osprey.yml"
        self.environ: dict[str, str] = {}
        if llm_url is not None:
            self.environ.update({
                "OSPREY__LLM__BASE_URL": llm_url,
                "OSPREY__LLM__MODEL": "fake-model",
                "OSPREY__LLM__MAX_ATTEMPTS": "3",
                "OSPREY__LLM__BACKOFF_SECONDS": "0.001",
                "OSPREY__LLM__TIMEOUT_SECONDS": "10",
            })
        self.configure()
        self._opened: list[Osprey] = []
        self._processes: list[subprocess.Popen[str]] = []

    def configure(self, approval: Mapping[str, Any] | None = None,
                  planning: Mapping[str, Any] | None = None) -> None:
        """(Re)write osprey.yml; JSON is YAML, so no YAML writer is needed."""
        data: dict[str, Any] = {"home": "."}
        if approval:
            data["approval"] = dict(approval)
        if planning:
            data["planning"] = dict(planning)
        self.config_path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    def host(self, *plugins: tuple[object, str]) -> PluginHost:
        """Built-ins only (approval_modes, respond, clarify), the test capabilities, ``plugins``."""
        host = load_plugins(environ={"OSPREY_LOAD_PLUGINS": "", "OSPREY_STRICT_PLUGINS": "1"})
        host.register(testcaps().Plugin(self.ledger.root), name=PLUGIN_NAME)
        for plugin, name in plugins:
            host.register(plugin, name=name)
        return host

    def osprey(self, *plugins: tuple[object, str],
               clock: Callable[[], datetime] | None = None) -> Osprey:
        """A fresh instance over this home: a new host, config and store connection."""
        host = self.host(*plugins)
        config = load_config(host, self.config_path, environ=self.environ)
        instance = Osprey(host=host, config=config, clock=clock)
        self._opened.append(instance)
        return instance

    def db(self) -> sqlite3.Connection:
        """A raw connection to the store, for tampering like someone with file access."""
        return sqlite3.connect(self.home / "osprey.db", isolation_level=None)

    def orphan_runs(self) -> None:
        """Make every run's owner a process of an earlier boot, as if it had died."""
        from osprey_core.orchestration.runtime import boot_id

        with contextlib.closing(self.db()) as db:
            db.execute("UPDATE runs SET owner=replace(owner, ?, 'gone'), "
                       "data=json_set(data, '$.owner_boot', 'gone')", [boot_id()])

    # -- subprocesses ------------------------------------------------------------------

    def install(self) -> Path:
        """Write the test plugin (and the driver) as an installed distribution."""
        if not self.site.exists():
            write_distribution(self.site, "osprey-plugin-orchtest",
                               entry_points={PLUGIN_NAME: PLUGIN_MODULE},
                               modules={PLUGIN_MODULE: PLUGIN_SOURCE,
                                        DRIVER_MODULE: DRIVER_SOURCE})
        return self.site

    def env(self) -> dict[str, str]:
        """A deliberate subprocess environment: strict plugins, only ours and the built-ins."""
        return osprey_env(self.home, pythonpath=self.install(), OSPREY_STRICT_PLUGINS="1",
                          OSPREY_LOAD_PLUGINS=PLUGIN_NAME, OSPREY_CONFIG=str(self.config_path),
                          **{LEDGER_ENV: str(self.ledger.root)}, **self.environ)

    def command(self, *args: str, module: str = "osprey_core") -> list[str]:
        return [sys.executable, "-m", module, *args]

    def call(self, *args: str, module: str = "osprey_core") -> subprocess.CompletedProcess[str]:
        """Run a command to completion (bounded by :data:`TIMEOUT`)."""
        return subprocess.run(self.command(*args, module=module), env=self.env(),
                              cwd=self.workdir, capture_output=True, text=True,
                              encoding="utf-8", timeout=TIMEOUT, check=False)

    def start(self, *args: str, module: str = "osprey_core") -> subprocess.Popen[str]:
        """Start a command in the background; :meth:`close` kills it if still running."""
        process = subprocess.Popen(self.command(*args, module=module), env=self.env(),
                                   cwd=self.workdir, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   encoding="utf-8")
        self._processes.append(process)
        return process

    def drive(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.call(*args, module=DRIVER_MODULE)

    @staticmethod
    def read_line(process: subprocess.Popen[str]) -> dict[str, Any]:
        """The first JSON line a held driver prints (it then waits to be killed)."""
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)
        line = process.stdout.readline() if ready else ""
        if not line:
            process.kill()
            _, err = process.communicate(timeout=TIMEOUT)
            raise AssertionError(f"driver printed nothing; exit {process.returncode}\n{err}")
        return json.loads(line)

    @staticmethod
    def kill(process: subprocess.Popen[str]) -> None:
        """SIGKILL, then reap it: a zombie would still look alive to ``kill(pid, 0)``."""
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=TIMEOUT)
        assert process.returncode == -signal.SIGKILL

    def close(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=TIMEOUT)
        for instance in self._opened:
            instance.close()


def json_out(result: subprocess.CompletedProcess[str]) -> Any:
    """Parse a subprocess's JSON stdout, showing its stderr if that fails."""
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"exit {result.returncode}, stdout not JSON:\n{result.stdout}\n"
                             f"stderr:\n{result.stderr}") from None


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class RecordingPlanner:
    """The offline planner, remembering every request it was given (a planner factory:
    pass it as ``Osprey(..., planner_factory=RecordingPlanner())``)."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def __call__(self, runtime: Any) -> RecordingPlanner:
        from osprey_core.planning import OfflinePlanner

        self.planner = OfflinePlanner(runtime.host.capabilities())
        return self

    async def plan(self, request: Any) -> Any:
        self.requests.append(request)
        return await self.planner.plan(request)
