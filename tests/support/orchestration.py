"""Shared pieces for the orchestrator, approval, store and durability tests.

The test capabilities live in ``orchestration_plugin.py``, one plugin module used two ways:
executed in-process (:func:`testcaps`) for single-process tests, and written as a real
installed distribution (:meth:`Lab.install`) for subprocesses, which find it through the
``osprey`` entry point like any pip-installed plugin. Every execution is appended to a
ledger directory, so a test counts executions across processes by reading files.
"""

from __future__ import annotations

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

#: The test capabilities, and the script that drives osprey in a subprocess: real modules
#: beside this one, shipped as text into the throwaway distribution.
PLUGIN_SOURCE = (Path(__file__).parent / "orchestration_plugin.py").read_text(encoding="utf-8")
DRIVER_SOURCE = (Path(__file__).parent / "orchestration_driver.py").read_text(encoding="utf-8")


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
        """Make every run's owner a process of an earlier boot, as if it had died (in
        whichever store engine the lab's runs are)."""
        from osprey_core.orchestration.runtime import boot_id
        from support.postgres import open_store_of

        store = open_store_of(self.environ, self.home)
        try:
            with store.transaction():
                for run in store.list_runs():
                    if run.owner_boot == boot_id():
                        store.update_run(run.model_copy(update={"owner_boot": "gone"}))
        finally:
            store.close()

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
