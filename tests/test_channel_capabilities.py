"""``channel_read``, ``channel_write`` and ``archiver_retrieval``: planning, approval, writing.

In-process tests drive the orchestrator against an in-memory connector that records every
write; the acceptance tests run ``osprey`` in separate processes against the simulated
``mock`` machine, which keeps its setpoints under the home directory.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.cli import Stored, assert_exit, osprey
from support.dist import osprey_env

from osprey_core.api import Osprey
from osprey_core.config import load_config
from osprey_core.control.capabilities import match_history, match_read, match_write
from osprey_core.hookspecs.capabilities import StepContext, StepServices
from osprey_core.planning import OfflinePlanner, PlanRequest, rank_capabilities
from osprey_core.plugin_host import PluginHost, load_plugins
from osprey_core.run_machine import RunState
from osprey_core.testing.fakes import FakeArchiver, FakeConnector, fake_plugin

uses_capabilities = pytest.mark.exercises_hook("register_capabilities")
uses_connectors = pytest.mark.exercises_hook("register_connectors")

CHANNELS = {"SR:CURRENT": 500.0, "HCM1:SP": 0.0, "HCM1:RB": 0.0, "SR:MODE": "MD",
            "LINAC:NOTE": "ok"}
METADATA = {"SR:CURRENT": {"units": "mA"}, "HCM1:SP": {"units": "A", "writable": True},
            "HCM1:RB": {"units": "A"},
            "SR:MODE": {"data_type": "enum", "enum_strings": ("SHUTDOWN", "MD", "USER"),
                        "writable": True}}
LIMITS = {"channels": {
    "HCM1:SP": {"writable": True, "min": -5, "max": 5, "max_step": 2,
                "verification": "readback", "readback_channel": "HCM1:RB",
                "tolerance": {"absolute": 0.01}},
    "SR:MODE": {"writable": True, "type": "enum", "allowed": ["SHUTDOWN", "MD", "USER"]},
    "LINAC:NOTE": {"writable": True, "type": "string"}}}


class PowerSupply(FakeConnector):
    """HCM1:RB follows HCM1:SP at once, like a fast power supply."""

    name = "plant"
    initial_values = CHANNELS
    channel_metadata = METADATA

    async def write(self, channel: str, value: Any) -> Any:
        ack = await super().write(channel, value)
        if channel == "HCM1:SP":
            self.set_value("HCM1:RB", value)
        return ack


def capability_host(*plugins: object) -> PluginHost:
    """The essential built-ins, the channel capabilities and ``plugins``."""
    host = load_plugins(environ={"OSPREY_LOAD_PLUGINS": "channel_capabilities",
                                 "OSPREY_STRICT_PLUGINS": "1"})
    for plugin in plugins:
        host.register(plugin)
    return host


class Plant:
    """An osprey over an in-memory plant, with its own home and configuration."""

    def __init__(self, root: Path, **control_system: Any) -> None:
        self.connector_class = type("Plant", (PowerSupply,), {"name": "plant"})
        self.connector_class.instances = []
        history = {"SR:CURRENT": [(datetime.now(UTC) - timedelta(minutes=minutes), 500.0 - m)
                                  for m, minutes in enumerate((90, 45, 20, 5))]}
        self.archiver_class = FakeArchiver.named("plant_archive", history=history)
        self.host = capability_host(fake_plugin(name="plant", connectors=[self.connector_class],
                                                archivers=[self.archiver_class]))
        path = root / "osprey.yml"
        settings = {"type": "plant", "writes_enabled": True, "limits": LIMITS,
                    "verify_timeout": 0.2, **control_system}
        path.write_text(json.dumps({"home": "home", "control_system": settings,
                                    "archiver": {"type": "plant_archive"}}), encoding="utf-8")
        self.osprey = Osprey(host=self.host, config=load_config(self.host, path, environ={}))

    @property
    def connector(self) -> PowerSupply:
        [connector] = self.connector_class.instances
        return connector

    def run(self, query: str) -> Any:
        return self.osprey.run(query, user="ana", session="s1", interface="test")


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[Plant]:
    instance = Plant(tmp_path)
    yield instance
    instance.osprey.close()


# -- phrasings the offline planner understands ------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), [
    ("read SR:CURRENT", ["SR:CURRENT"]),
    ("read SR:CURRENT, BPM1:X and BPM2:X please", ["SR:CURRENT", "BPM1:X", "BPM2:X"]),
    ("What is SR:CURRENT?", ["SR:CURRENT"]),
    ("show me the value of sys/tg_test/1/double_scalar", ["sys/tg_test/1/double_scalar"]),
    ("what is the beam current", None),
    ("read the manual", None),
])
def test_read_phrasings(query: str, expected: list[str] | None) -> None:
    assert match_read(query) == (None if expected is None else {"channels": expected})


@pytest.mark.parametrize(("query", "expected"), [
    ("set HCM1:SP to 2.0 A", [{"channel": "HCM1:SP", "value": 2.0, "units": "A"}]),
    ("please set HCM1:SP to 1.5A", [{"channel": "HCM1:SP", "value": 1.5, "units": "A"}]),
    ("set HCM1:SP to 2 and read SR:CURRENT", [{"channel": "HCM1:SP", "value": 2}]),
    ("set SR:MODE to USER", [{"channel": "SR:MODE", "value": "USER"}]),
    ("set SR:MODE to ON.", [{"channel": "SR:MODE", "value": "ON"}]),  # not YAML's True
    ('set SR:MODE to "Machine Development"',
     [{"channel": "SR:MODE", "value": "Machine Development"}]),
    ("set A:SP to -1e-3 mA and B:SP to 2.5 mA",
     [{"channel": "A:SP", "value": -0.001, "units": "mA"},
      {"channel": "B:SP", "value": 2.5, "units": "mA"}]),
    ("set WF:SP to [1, 2.5]", [{"channel": "WF:SP", "value": [1, 2.5]}]),
    ("set the corrector to 2 A", None),
    ("set up the logbook", None),
])
def test_write_phrasings(query: str, expected: list[dict[str, Any]] | None) -> None:
    assert match_write(query) == (None if expected is None else {"writes": expected})


@pytest.mark.parametrize(("query", "expected"), [
    ("history of SR:CURRENT over the last hour", (["SR:CURRENT"], 3600)),
    ("history of SR:CURRENT and BPM1:X over the last 30 minutes",
     (["SR:CURRENT", "BPM1:X"], 1800)),
    ("show the archived data of SR:VAC:P1 for the past 2 days", (["SR:VAC:P1"], 172800)),
    ("trend of RF:FREQ over the last day", (["RF:FREQ"], 86400)),
    ("history of the beam over the last hour", None),
    ("read SR:CURRENT", None),
])
def test_history_phrasings(query: str, expected: tuple[list[str], float] | None) -> None:
    found = match_history(query)
    if expected is None:
        assert found is None
    else:
        assert found == {"channels": expected[0], "since_seconds": expected[1]}


def offline_plan(host: PluginHost, query: str) -> list[tuple[str, dict[str, Any]]]:
    capabilities = host.capabilities()
    request = PlanRequest(query=query, capabilities=rank_capabilities(query, capabilities, 8),
                          context_keys=["query"])
    plan = asyncio.run(OfflinePlanner(capabilities).plan(request))
    return [(step.capability, step.parameters) for step in plan.steps]


@uses_capabilities
def test_the_offline_planner_builds_plans_from_the_three_capabilities() -> None:
    host = capability_host()
    assert offline_plan(host, "read SR:CURRENT and HCM1:SP") == [
        ("channel_read", {"channels": ["SR:CURRENT", "HCM1:SP"]}),
        ("respond", {"message": ""})]
    assert offline_plan(host, "set HCM1:SP to 2.0 A") == [
        ("channel_write", {"writes": [{"channel": "HCM1:SP", "value": 2.0, "units": "A"}]}),
        ("respond", {"message": ""})]
    [(name, parameters), _] = offline_plan(host, "history of SR:CURRENT over the last hour")
    assert (name, parameters["channels"], parameters["since_seconds"]) == (
        "archiver_retrieval", ["SR:CURRENT"], 3600.0)
    steps = offline_plan(host, "read SR:CURRENT, then set HCM1:SP to 1 A")
    assert sorted(name for name, _ in steps) == ["channel_read", "channel_write", "respond"]
    assert offline_plan(host, "set the corrector to 2 A")[0][0] == "clarify"


@uses_capabilities
def test_the_capabilities_declare_what_they_provide_and_that_writes_need_approval() -> None:
    capabilities = capability_host().capabilities()
    read, write, history = (capabilities.get(name) for name in
                            ("channel_read", "channel_write", "archiver_retrieval"))
    assert capabilities.origin("channel_write") == "channel_capabilities"
    assert (read.provides, write.provides, history.provides) == (
        ("channel_values",), ("channel_writes",), ("channel_history",))
    assert write.side_effects and write.approval_kind == "channel_write"
    assert not read.side_effects and not history.side_effects


# -- reading and history in-process -------------------------------------------------------------


@uses_capabilities
@uses_connectors
def test_a_read_answers_with_values_units_and_timestamps(plant: Plant) -> None:
    run = plant.run("read SR:CURRENT and HCM1:SP")
    assert run.state is RunState.DONE, run.error
    values = run.context["channel_read"]
    assert {name: (entry["value"], entry["units"], entry["severity"])
            for name, entry in values.items()} == {
        "SR:CURRENT": (500.0, "mA", "NO_ALARM"), "HCM1:SP": (0.0, "A", "NO_ALARM")}
    assert "SR:CURRENT" in run.response and "units: mA" in run.response
    assert plant.connector.writes == []


@uses_capabilities
@uses_connectors
def test_reading_an_unknown_channel_fails_the_run_naming_it(plant: Plant) -> None:
    run = plant.run("read SR:CURRENT and NOPE:X")
    assert run.state is RunState.FAILED
    assert "NOPE:X" in (run.error or "") and "no channel 'NOPE:X'" in (run.error or "")


@uses_capabilities
@pytest.mark.exercises_hook("register_archivers")
def test_history_over_the_last_hour_comes_from_the_configured_archiver(plant: Plant) -> None:
    run = plant.run("history of SR:CURRENT over the last hour")
    assert run.state is RunState.DONE, run.error
    history = run.context["archiver_retrieval"]["SR:CURRENT"]
    assert [value for _, value in history["samples"]] == [499.0, 498.0, 497.0]  # not 90 min
    assert (history["count"], history["min"], history["max"]) == (3, 497.0, 499.0)
    [call] = plant.archiver_class.instances[-1].calls
    assert call[0] == ("SR:CURRENT",) and call[2] - call[1] == timedelta(hours=1)


# -- writing: approval artifact and exactly the approved values --------------------------------


@uses_capabilities
@uses_connectors
def test_a_write_pauses_with_channel_current_requested_units_limits_and_verification(
        plant: Plant) -> None:
    plant.connector_class.initial_values = {**CHANNELS, "HCM1:SP": 0.25}
    run = plant.run("set HCM1:SP to 1.5 A")
    assert run.state is RunState.AWAITING_STEP_APPROVAL, run.error
    approval = plant.osprey.approval(run.approval_id or "")
    assert approval.action == "channel_write"
    assert approval.artifact == {"writes": [{
        "channel": "HCM1:SP", "value": 1.5, "current": 0.25, "units": "A",
        "limits": {"min": -5.0, "max": 5.0, "max_step": 2.0}, "verification": "readback",
        "readback_channel": "HCM1:RB", "tolerance": {"absolute": 0.01}, "notes": []}]}
    assert "HCM1:SP: 0.25 A -> 1.5 A" in approval.summary
    assert "min -5, max 5, max step 2" in approval.summary
    assert "readback of HCM1:RB within ±0.01" in approval.summary
    assert plant.connector.writes == []  # nothing before the decision

    done = plant.osprey.approve(approval.id, user="shift-leader", interface="test")
    assert done.state is RunState.DONE, done.error
    assert plant.connector.writes == [("HCM1:SP", 1.5)]
    [result] = done.context["channel_write"]
    assert (result["status"], result["previous"], result["readback"], result["verified"]) == (
        "ok", 0.25, 1.5, True)
    audit = [(entry.action, entry.actor, entry.approval_id)
             for entry in plant.osprey.audit(run_id=run.id)
             if entry.action.startswith("channel_write")]
    assert audit == [("channel_write_started", "ana", approval.id),
                     ("channel_write_ok", "ana", approval.id)]


@uses_capabilities
@uses_connectors
def test_execute_writes_the_approved_artifact_not_the_step_parameters(plant: Plant) -> None:
    capability = plant.host.capabilities().get("channel_write")
    control = plant.osprey.runtime.control_system
    services = StepServices.offering(control_system=control)
    parameters = capability.parameters.model_validate(
        {"writes": [{"channel": "HCM1:SP", "value": 4.0}]})
    artifact = {"writes": [{"channel": "HCM1:SP", "value": 1.25}]}
    step = StepContext(run_id="run-x", index=0, query="q", user="ana", session="s1",
                       parameters=parameters, artifact=artifact, approval_id="apv-x",
                       interface="test", services=services)
    results = asyncio.run(capability.execute(step))
    assert [(r["channel"], r["requested"], r["status"]) for r in results] == [
        ("HCM1:SP", 1.25, "ok")]
    assert plant.connector.writes == [("HCM1:SP", 1.25)]
    without = StepContext(run_id="run-x", index=0, query="q", user="ana", session="s1",
                          parameters=parameters, services=services)
    with pytest.raises(Exception, match="only an approved artifact"):
        asyncio.run(capability.execute(without))
    assert plant.connector.writes == [("HCM1:SP", 1.25)]


@uses_capabilities
@uses_connectors
def test_a_write_beyond_the_limits_is_refused_before_anyone_is_asked(plant: Plant) -> None:
    run = plant.run("set HCM1:SP to 9 A")
    assert run.state is RunState.FAILED and run.approval_id is None
    assert run.error == ("step 1 (channel_write) refused before asking for approval: "
                         "HCM1:SP: 9 is above the maximum 5.0; nothing was asked or written")
    assert plant.osprey.approvals() == []
    assert plant.connector.writes == []
    actions = [entry.action for entry in plant.osprey.audit(run_id=run.id)]
    assert "step_refused" in actions and "approval_requested" not in actions
    assert not any(action.startswith("channel_write") for action in actions)


@uses_capabilities
@uses_connectors
def test_mismatched_units_or_an_unknown_channel_fail_before_anyone_is_asked(
        plant: Plant) -> None:
    run = plant.run("set HCM1:SP to 1.5 mA")
    assert run.state is RunState.FAILED and run.approval_id is None
    assert "request is in 'mA', but the channel's units are 'A'" in (run.error or "")
    run = plant.run("set HCM9:SP to 1.5 A")
    assert run.state is RunState.FAILED and run.approval_id is None
    assert "cannot write HCM9:SP" in (run.error or "")
    assert plant.osprey.approvals() == []
    assert plant.connector.writes == []


@uses_capabilities
@uses_connectors
def test_enum_and_string_writes_keep_their_text(plant: Plant) -> None:
    run = plant.run('set SR:MODE to USER and LINAC:NOTE to "tuning, back at 14:00"')
    assert run.state is RunState.AWAITING_STEP_APPROVAL, run.error
    writes = plant.osprey.approval(run.approval_id or "").artifact["writes"]
    assert [(w["channel"], w["value"], w["current"]) for w in writes] == [
        ("SR:MODE", "USER", "MD"), ("LINAC:NOTE", "tuning, back at 14:00", "ok")]
    done = plant.osprey.approve(run.approval_id or "", user="shift-leader", interface="test")
    assert done.state is RunState.DONE, done.error
    assert plant.connector.writes == [("SR:MODE", "USER"),
                                      ("LINAC:NOTE", "tuning, back at 14:00")]
    refused = plant.run("set SR:MODE to BEAM")  # not an allowed value: nobody is asked
    assert refused.state is RunState.FAILED and refused.approval_id is None
    assert "SR:MODE: 'BEAM' is not one of" in (refused.error or "")
    assert plant.connector.channels["SR:MODE"] == "USER"


@uses_capabilities
@uses_connectors
def test_a_failed_write_stops_the_rest_and_fails_the_run(plant: Plant) -> None:
    run = plant.run("set SR:MODE to USER and HCM1:SP to 4 A and LINAC:NOTE to done")
    failed = plant.osprey.approve(run.approval_id or "", user="shift-leader",
                                  interface="test")
    assert failed.state is RunState.FAILED
    assert "HCM1:SP blocked (step_too_large)" in (failed.error or "")
    assert "LINAC:NOTE blocked (skipped)" in (failed.error or "")
    assert plant.connector.writes == [("SR:MODE", "USER")]


@uses_capabilities
@uses_connectors
def test_a_nan_reading_survives_the_approval_and_max_step_fails_closed(plant: Plant) -> None:
    plant.connector_class.initial_values = {**CHANNELS, "HCM1:SP": float("nan")}
    run = plant.run("set HCM1:SP to 1 A")
    approval = plant.osprey.approval(run.approval_id or "")
    assert approval.artifact["writes"][0]["current"] is None  # JSON has no NaN
    assert approval.artifact_intact()
    failed = plant.osprey.approve(approval.id, user="shift-leader", interface="test")
    assert failed.state is RunState.FAILED
    assert "cannot check max_step: the current value of HCM1:SP is nan" in (failed.error or "")
    assert plant.connector.writes == []


def test_non_finite_values_are_refused_when_the_plan_is_validated() -> None:
    from osprey_core.control.capabilities import WriteParameters

    with pytest.raises(ValueError, match="not a finite number"):
        WriteParameters.model_validate({"writes": [{"channel": "HCM1:SP",
                                                    "value": float("nan")}]})


# -- across processes, against the simulated machine -------------------------------------------


def mock_env(tmp_path: Path, *, control_system: Mapping[str, Any] | None = None,
             write_config: bool = True) -> dict[str, str]:
    """Every built-in plugin (the mock machine included), strict, with a fresh home."""
    settings: dict[str, Any] = {"writes_enabled": True, "verify_timeout": 5.0,
                                "limits": {"channels": {
                                    "HCM1:SP": {"writable": True, "min": -5, "max": 5,
                                                "max_step": 3, "verification": "readback",
                                                "readback_channel": "HCM1:RB",
                                                "tolerance": {"absolute": 0.01}},
                                    "SR:MODE": {"writable": True, "type": "enum",
                                                "allowed": ["Shutdown", "Machine Development",
                                                            "User Operations"]}}}}
    settings.update(control_system or {})
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "osprey.yml"
    if write_config:
        config.write_text(json.dumps({"control_system": settings}), encoding="utf-8")
    env = osprey_env(tmp_path / "home", OSPREY_STRICT_PLUGINS="1")
    if write_config:
        env["OSPREY_CONFIG"] = str(config)
    return env


def approval_of(result: Any) -> str:
    payload = json.loads(result.stdout)
    assert payload["state"] == "awaiting_step_approval", payload
    return str(payload["approval"]["id"])


@uses_capabilities
def test_a_write_through_osprey_run_is_approved_from_another_process(tmp_path: Path) -> None:
    env = mock_env(tmp_path, control_system={"type": "mock"})
    cwd = tmp_path
    asked = osprey("run", "set HCM1:SP to 2.0 A", "--json", "--user", "ana", env=env, cwd=cwd)
    assert_exit(asked, 3)
    approval_id = approval_of(asked)
    artifact = json.loads(asked.stdout)["approval"]["artifact"]["writes"][0]
    assert (artifact["channel"], artifact["value"], artifact["current"], artifact["units"]) == (
        "HCM1:SP", 2.0, 0.0, "A")
    assert "Notice" not in asked.stderr  # control_system.type is set

    before = osprey("channels", "read", "HCM1:SP", "--json", env=env, cwd=cwd)
    assert_exit(before, 0)
    assert json.loads(before.stdout)["HCM1:SP"]["value"] == 0.0  # nothing before approval

    approved = osprey("approvals", "approve", approval_id, "--user", "shift-leader",
                      env=env, cwd=cwd)
    assert_exit(approved, 0)
    assert re.search(r"HCM1:SP +2 +0 +[\d.]+ +ok, verified \(readback\)", approved.stdout)

    after = osprey("channels", "read", "HCM1:SP", "HCM1:RB", "--json", env=env, cwd=cwd)
    assert_exit(after, 0)
    values = json.loads(after.stdout)
    assert values["HCM1:SP"]["value"] == 2.0
    assert values["HCM1:RB"]["value"] == pytest.approx(2.0, abs=0.01)

    audit = [entry for entry in Stored(env).audit()
             if entry["action"].startswith("channel_write")]
    assert [(e["action"], e["actor"], e["interface"], e["approval_id"]) for e in audit] == [
        ("channel_write_started", "ana", "cli", approval_id),
        ("channel_write_ok", "ana", "cli", approval_id)]
    assert audit[0]["details"]["requested"] == 2.0
    assert audit[1]["details"]["readback"]["channel"] == "HCM1:RB"


@uses_capabilities
def test_with_writes_disabled_a_write_is_refused_before_anyone_is_asked(
        tmp_path: Path) -> None:
    env = mock_env(tmp_path, control_system={"writes_enabled": False})
    refused = osprey("run", "set HCM1:SP to 1.0 A", "--json", env=env, cwd=tmp_path)
    assert_exit(refused, 1)
    assert "HCM1:SP: writes are disabled (control_system.writes_enabled is false)" in (
        json.loads(refused.stdout)["error"])
    read = osprey("channels", "read", "HCM1:SP", "--json", env=env, cwd=tmp_path)
    assert json.loads(read.stdout)["HCM1:SP"]["value"] == 0.0
    [run] = Stored(env).runs()
    assert run["state"] == "failed" and run["approval_id"] is None
    assert Stored(env).approvals() == {}
    actions = [entry["action"] for entry in Stored(env).audit()]
    assert "step_refused" in actions and "approval_requested" not in actions
    assert not any(action.startswith("channel_write") for action in actions)


@uses_capabilities
def test_an_enum_label_is_written_to_the_mock_machine(tmp_path: Path) -> None:
    env = mock_env(tmp_path)
    asked = osprey("run", 'set SR:MODE to "Machine Development"', "--json", env=env,
                   cwd=tmp_path)
    assert_exit(asked, 3)
    approved = osprey("approvals", "approve", approval_of(asked), env=env, cwd=tmp_path)
    assert_exit(approved, 0)
    read = osprey("channels", "read", "SR:MODE", "--json", env=env, cwd=tmp_path)
    assert json.loads(read.stdout)["SR:MODE"]["value"] == "Machine Development"


@uses_capabilities
def test_the_default_mock_type_is_announced_only_when_not_set(tmp_path: Path) -> None:
    unset = mock_env(tmp_path / "unset")  # the config has no control_system.type
    result = osprey("run", "read SR:CURRENT", env=unset, cwd=tmp_path)
    assert_exit(result, 0)
    assert ("control_system.type is not set: using the simulated 'mock' machine (no real "
            "control system is contacted)") in result.stderr
    assert result.stderr.count("control_system.type is not set") == 1
    assert "SR:CURRENT" in result.stdout
    explicit = mock_env(tmp_path / "set", control_system={"type": "mock"})
    result = osprey("run", "read SR:CURRENT", env=explicit, cwd=tmp_path)
    assert_exit(result, 0)
    assert "control_system.type is not set" not in result.stderr
    bare = mock_env(tmp_path / "bare", write_config=False)  # no config file at all
    result = osprey("channels", "read", "SR:CURRENT", env=bare, cwd=tmp_path / "bare")
    assert_exit(result, 0)
    assert "using the simulated 'mock' machine" in result.stderr
