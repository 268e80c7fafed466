"""A write the configuration already forbids is refused before anyone is asked to approve it.

Writes disabled, a channel with no limits entry or one marked not writable, a value outside
its limits: the run fails at once with the step, the channel and the reason, no approval
request is made, the refusal is in the audit log, and the simulated machine is untouched.
Everything is real: the ``mock`` machine keeps its setpoints under the home directory and
the run store is the SQLite database there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from osprey_core.api import Osprey
from osprey_core.config import load_config
from osprey_core.models import Plan, PlanStep, RunRecord
from osprey_core.plugin_host import load_plugins
from osprey_core.run_machine import RunState

LIMITS = {"channels": {
    "HCM1:SP": {"writable": True, "type": "float", "min": -5.0, "max": 5.0,
                "verification": "readback", "readback_channel": "HCM1:RB",
                "tolerance": {"absolute": 0.01}},
    "HCM3:SP": {"writable": False}}}


class Machine:
    """An osprey on the simulated machine, in its own home."""

    def __init__(self, root: Path, *, writes_enabled: bool = True) -> None:
        self.home = root / "home"
        settings = {"home": str(self.home),
                    "control_system": {"type": "mock", "writes_enabled": writes_enabled,
                                       "verify_timeout": 5.0, "limits": LIMITS}}
        path = root / "osprey.yml"
        path.write_text(json.dumps(settings), encoding="utf-8")
        host = load_plugins(environ={"OSPREY_STRICT_PLUGINS": "1"})
        self.osprey = Osprey(host=host, config=load_config(host, path, environ={}))

    def step(self, capability: str, parameters: dict[str, Any]) -> RunRecord:
        plan = Plan(steps=[PlanStep(capability=capability, output="result",
                                    parameters=parameters)])
        return self.osprey.run("change the machine", user="ana", session="s1",
                               interface="test", plan=plan)

    def write(self, channel: str, value: Any) -> RunRecord:
        return self.step("channel_write", {"writes": [{"channel": channel, "value": value}]})

    def code(self, code: str) -> RunRecord:
        return self.step("python_write", {"objective": "change the machine", "code": code})

    def value(self, channel: str) -> Any:
        run = self.osprey.run(f"read {channel}", user="ana", session="s1", interface="test")
        return run.context["channel_read"][channel]["value"]

    def assert_refused_untouched(self, run: RunRecord, *phrases: str) -> None:
        """Failed with ``phrases`` in its error, asked nobody, refusal audited, nothing
        written: the machine holds no setpoint of this run's making."""
        assert run.state is RunState.FAILED
        assert run.approval_id is None
        for phrase in phrases:
            assert phrase in (run.error or ""), run.error
        assert self.osprey.approvals() == []
        audit = self.osprey.audit(run_id=run.id)
        actions = [entry.action for entry in audit]
        assert "approval_requested" not in actions
        assert not any(action.startswith(("channel_write", "code_execution"))
                       for action in actions), actions
        [refusal] = [entry for entry in audit if entry.action == "step_refused"]
        assert refusal.details["step"] == 1 and refusal.details["reason"] == run.error
        assert refusal.actor == "ana" and refusal.interface == "test"
        assert actions[-1] == "run_failed"
        assert not (self.home / "mock-machine.json").exists()  # no setpoint was ever put


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    instance = Machine(tmp_path)
    yield instance
    instance.osprey.close()


@pytest.mark.parametrize(("channel", "value", "reason"), [
    ("HCM2:SP", 1.0, "HCM2:SP is not in the limits database, so it is not writable"),
    ("HCM1:SP", 9.0, "9.0 is above the maximum 5.0"),
    ("HCM3:SP", 1.0, "HCM3:SP is not writable (limits database)"),
])
def test_a_channel_write_the_limits_forbid_is_refused_before_asking(
        machine: Machine, channel: str, value: float, reason: str) -> None:
    before = machine.value(channel)
    run = machine.write(channel, value)
    machine.assert_refused_untouched(
        run, "step 1 (channel_write) refused before asking for approval", f"{channel}: {reason}")
    assert machine.value(channel) == before


def test_with_writes_disabled_a_channel_write_is_refused_before_asking(tmp_path: Path) -> None:
    machine = Machine(tmp_path, writes_enabled=False)
    try:
        run = machine.write("HCM1:SP", 1.0)
        machine.assert_refused_untouched(
            run, "step 1 (channel_write)", "HCM1:SP: writes are disabled "
            "(control_system.writes_enabled is false)")
        assert machine.value("HCM1:SP") == 0.0
    finally:
        machine.osprey.close()


def test_a_permitted_write_still_asks(machine: Machine) -> None:
    run = machine.write("HCM1:SP", 1.0)
    assert run.state is RunState.AWAITING_STEP_APPROVAL
    assert [approval.id for approval in machine.osprey.approvals()] == [run.approval_id]


@pytest.mark.parametrize(("code", "reason"), [
    ('write_channel("HCM1:SP", 9.0)\n', "line 1: HCM1:SP: 9.0 is above the maximum 5.0"),
    ('x = read_channel("HCM1:RB")\nwrite_channel("HCM2:SP", x)\n',
     "line 2: HCM2:SP: HCM2:SP is not in the limits database"),
])
def test_python_write_code_whose_known_writes_are_forbidden_is_refused_before_asking(
        machine: Machine, code: str, reason: str) -> None:
    run = machine.code(code)
    machine.assert_refused_untouched(
        run, "step 1 (python_write) refused before asking for approval", reason,
        "nothing was asked or run")


def test_with_writes_disabled_code_writing_a_computed_channel_is_refused(
        tmp_path: Path) -> None:
    machine = Machine(tmp_path, writes_enabled=False)
    try:
        run = machine.code('name = "HCM" + "1:SP"\nwrite_channel(name, 1.0)\n')
        machine.assert_refused_untouched(run, "step 1 (python_write)",
                                         "the code writes, but writes are disabled")
    finally:
        machine.osprey.close()
