"""``osprey channels`` and ``osprey archiver`` end to end, each command its own process.

Most tests use the built-in simulated machine (``mock``), whose setpoints persist under
the home directory, so one process sees what another wrote. A small installed plugin adds
a ``plant`` connector and archiver whose unknown channels fail, for the error paths.
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.cli import Stored, assert_exit, osprey
from support.dist import osprey_env, write_distribution

pytestmark = pytest.mark.exercises_hook("register_commands")
uses_connectors = pytest.mark.exercises_hook("register_connectors")

LIMITS = {"channels": {
    "HCM1:SP": {"writable": True, "min": -5, "max": 5, "max_step": 3,
                "verification": "readback", "readback_channel": "HCM1:RB",
                "tolerance": {"absolute": 0.01}},
    "SR:MODE": {"writable": True, "type": "enum",
                "allowed": ["Shutdown", "Machine Development", "User Operations"]}}}

PLANT_PLUGIN = """
    from datetime import UTC, datetime, timedelta

    from osprey_core import hookimpl
    from osprey_core.testing.fakes import FakeArchiver, FakeConnector

    NOW = datetime.now(UTC)
    Plant = FakeConnector.named("plant", channels={"A:X": 1.5}, metadata={"A:X": {"units": "mm"}})
    Archive = FakeArchiver.named("plant", history={
        "A:X": [(NOW - timedelta(minutes=m), float(m)) for m in (90, 30, 10, 1)]})


    @hookimpl
    def register_connectors(register):
        register(Plant)


    @hookimpl
    def register_archivers(register):
        register(Archive)
"""


def environment(tmp_path: Path, *, plant: bool = False, **control_system: Any) -> dict[str, str]:
    settings = {"type": "plant" if plant else "mock", "writes_enabled": True,
                "verify_timeout": 5.0, "limits": LIMITS, **control_system}
    data: dict[str, Any] = {"control_system": settings}
    site = None
    if plant:
        data["archiver"] = {"type": "plant"}
        site = write_distribution(tmp_path / "site", "osprey-plugin-plant",
                                  entry_points={"plant": "plant_plugin"},
                                  modules={"plant_plugin": PLANT_PLUGIN})
    config = tmp_path / "osprey.yml"
    config.write_text(json.dumps(data), encoding="utf-8")
    return osprey_env(tmp_path / "home", pythonpath=site, OSPREY_STRICT_PLUGINS="1",
                      OSPREY_CONFIG=str(config))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return environment(tmp_path)


def run(*args: str, env: dict[str, str], cwd: Path, code: int = 0
        ) -> subprocess.CompletedProcess[str]:
    result = osprey(*args, env=env, cwd=cwd)
    assert_exit(result, code)
    return result


def as_json(*args: str, env: dict[str, str], cwd: Path, code: int = 0) -> Any:
    return json.loads(run(*args, "--json", env=env, cwd=cwd, code=code).stdout)


# -- read ---------------------------------------------------------------------------------


def test_read_prints_values_units_severity_and_time(env, tmp_path) -> None:
    out = run("channels", "read", "SR:CURRENT", "HCM1:SP", "SR:MODE", env=env,
              cwd=tmp_path).stdout
    for text in ("SR:CURRENT", "mA", "HCM1:SP", "0.0", "User Operations", "NO_ALARM",
                 "timestamp"):
        assert text in out
    assert re.search(r"NO_ALARM +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d\d:\d\d", out)
    data = as_json("channels", "read", "SR:CURRENT", "HCM1:SP", "SR:MODE", env=env,
                   cwd=tmp_path)
    assert list(data) == ["SR:CURRENT", "HCM1:SP", "SR:MODE"]
    assert data["SR:CURRENT"]["units"] == "mA" and 0 < data["SR:CURRENT"]["value"] < 600
    assert (data["HCM1:SP"]["value"], data["SR:MODE"]["value"]) == (0.0, "User Operations")
    assert datetime.fromisoformat(data["SR:MODE"]["timestamp"]).tzinfo is not None
    assert data["SR:MODE"]["severity"] == "NO_ALARM"


@uses_connectors
def test_read_failures_are_reported_per_channel_and_exit_1(tmp_path) -> None:
    env = environment(tmp_path, plant=True)
    result = run("channels", "read", "A:X", "NOPE:X", env=env, cwd=tmp_path, code=1)
    assert "A:X" in result.stdout and "1.5" in result.stdout and "mm" in result.stdout
    assert "Error: NOPE:X: connector 'plant' has no channel 'NOPE:X'" in result.stderr
    data = as_json("channels", "read", "A:X", "NOPE:X", env=env, cwd=tmp_path, code=1)
    assert data["A:X"]["value"] == 1.5
    assert data["NOPE:X"] == {"error": "connector 'plant' has no channel 'NOPE:X'"}


def test_an_undeclared_name_on_the_simulated_machine_is_named_once_with_a_suggestion(
        env, tmp_path) -> None:
    result = run("channels", "read", "SR:CURRNT", env=env, cwd=tmp_path, code=1)
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert error.startswith("Error: SR:CURRNT: no such channel on the simulated machine; "
                            "did you mean SR:CURRENT?")
    assert error.count("SR:CURRNT") == 1


def test_a_malformed_channel_name_is_a_usage_error(env, tmp_path) -> None:
    for command in (("read", "SR:CURRENT", "bad name"), ("info", "a\tb"),
                    ("monitor", "x y"), ("write", "bad name", "1")):
        result = run("channels", *command, env=env, cwd=tmp_path, code=2)
        assert "invalid channel name" in result.stderr
    database = Path(env["OSPREY_HOME"]) / "osprey.db"
    assert not database.exists() or Stored(env).runs() == []  # no write run was started


# -- info -----------------------------------------------------------------------------------


def test_info_shows_metadata_and_the_limits_entry(env, tmp_path) -> None:
    out = run("channels", "info", "HCM1:SP", env=env, cwd=tmp_path).stdout
    for text in ("Horizontal corrector 1 current setpoint", "limits.max", "limits.max_step",
                 "readback", "HCM1:RB", "writes_enabled"):
        assert text in out, out
    data = as_json("channels", "info", "HCM1:SP", env=env, cwd=tmp_path)
    assert (data["connector"], data["metadata"]["units"], data["writes_enabled"]) == (
        "mock", "A", True)
    assert data["limits"] == {"writable": True, "min": -5.0, "max": 5.0, "max_step": 3.0,
                              "verification": "readback", "readback_channel": "HCM1:RB",
                              "tolerance": {"absolute": 0.01}}
    unlisted = as_json("channels", "info", "SR:CURRENT", env=env, cwd=tmp_path)
    assert unlisted["limits"] is None
    assert "not in the limits database" in run("channels", "info", "SR:CURRENT", env=env,
                                               cwd=tmp_path).stdout


# -- monitor --------------------------------------------------------------------------------


def test_monitor_prints_the_current_value_then_changes_until_count(env, tmp_path) -> None:
    result = run("channels", "monitor", "SR:CURRENT", "--count", "3", "--json", env=env,
                 cwd=tmp_path)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3 and {line["channel"] for line in lines} == {"SR:CURRENT"}
    stamps = [datetime.fromisoformat(line["timestamp"]) for line in lines]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


def test_monitor_stops_after_duration(env, tmp_path) -> None:
    result = run("channels", "monitor", "HCM1:SP", "--duration", "0.3", env=env, cwd=tmp_path)
    [line] = result.stdout.splitlines()  # a setpoint nobody touches changes no more
    assert "HCM1:SP" in line and "0.0 A" in line and "NO_ALARM" in line


def test_monitor_sees_a_write_made_by_another_process(tmp_path) -> None:
    env = {**environment(tmp_path), "OSPREY__APPROVAL__MODE": "disabled"}
    monitor = subprocess.Popen(
        [sys.executable, "-m", "osprey_core", "channels", "monitor", "HCM1:SP", "--count", "2",
         "--duration", "30", "--json"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert monitor.stdout is not None
        ready, _, _ = select.select([monitor.stdout], [], [], 30)
        assert ready, "the monitor printed nothing"
        assert json.loads(monitor.stdout.readline())["value"] == 0.0
        run("channels", "write", "HCM1:SP", "1.25", env=env, cwd=tmp_path)
        out, err = monitor.communicate(timeout=30)
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.communicate(timeout=30)
    assert monitor.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["value"] == 1.25


# -- write ----------------------------------------------------------------------------------


def test_write_pauses_for_approval_and_writes_the_approved_value(env, tmp_path) -> None:
    paused = as_json("channels", "write", "HCM1:SP", "1.5", "--units", "A", "--user", "ana",
                     env=env, cwd=tmp_path, code=3)
    approval = paused["approval"]
    assert paused["state"] == "awaiting_step_approval" and approval["action"] == "channel_write"
    assert paused["query"] == "set HCM1:SP to 1.5 A"
    [entry] = approval["artifact"]["writes"]
    assert (entry["channel"], entry["value"], entry["current"], entry["units"],
            entry["verification"], entry["readback_channel"]) == (
        "HCM1:SP", 1.5, 0.0, "A", "readback", "HCM1:RB")
    text = run("channels", "write", "HCM1:SP", "2", env=env, cwd=tmp_path, code=3).stdout
    assert "HCM1:SP: 0.0 A -> 2 A" in text and "osprey approvals approve apv-" in text

    done = run("approvals", "approve", approval["id"], env=env, cwd=tmp_path)
    assert re.search(r"HCM1:SP +1\.5 +0 +[\d.]+ +ok, verified \(readback\)", done.stdout)
    value = as_json("channels", "read", "HCM1:SP", env=env, cwd=tmp_path)["HCM1:SP"]["value"]
    assert value == 1.5 and isinstance(value, float)
    audit = [(e["action"], e["actor"], e["approval_id"]) for e in Stored(env).audit()
             if e["action"].startswith("channel_write")]
    assert audit == [("channel_write_started", "ana", approval["id"]),
                     ("channel_write_ok", "ana", approval["id"])]


def test_write_without_approval_mode_still_obeys_the_limits(tmp_path) -> None:
    env = {**environment(tmp_path), "OSPREY__APPROVAL__MODE": "disabled"}
    done = run("channels", "write", "HCM1:SP", "0.5", env=env, cwd=tmp_path)
    assert re.search(r"HCM1:SP +0\.5 +0 +[\d.]+ +ok, verified", done.stdout)
    too_far = run("channels", "write", "HCM1:SP", "4.5", env=env, cwd=tmp_path, code=1)
    assert "HCM1:SP blocked (step_too_large)" in too_far.stderr
    unlisted = run("channels", "write", "VCM1:SP", "0.1", env=env, cwd=tmp_path, code=1)
    assert "VCM1:SP: VCM1:SP is not in the limits database" in unlisted.stderr  # not asked
    text = run("channels", "write", "SR:MODE", "2", "--type", "string", env=env,
               cwd=tmp_path, code=1)
    assert "not one of" in text.stderr  # the text "2", not an enum index
    enum = run("channels", "write", "SR:MODE", "Machine Development", env=env, cwd=tmp_path)
    assert re.search(r"SR:MODE +Machine Development +.* ok", enum.stdout), enum.stdout
    values = as_json("channels", "read", "HCM1:SP", "SR:MODE", env=env, cwd=tmp_path)
    assert (values["HCM1:SP"]["value"], values["SR:MODE"]["value"]) == (
        0.5, "Machine Development")


def test_write_with_writes_disabled_is_refused_before_asking(tmp_path) -> None:
    env = {**environment(tmp_path, writes_enabled=False), "OSPREY__APPROVAL__MODE": "disabled"}
    result = run("channels", "write", "HCM1:SP", "0.5", env=env, cwd=tmp_path, code=1)
    assert "HCM1:SP: writes are disabled (control_system.writes_enabled is false)" in (
        result.stderr)
    assert Stored(env).approvals() == {}
    assert as_json("channels", "read", "HCM1:SP", env=env, cwd=tmp_path)["HCM1:SP"][
        "value"] == 0.0


@pytest.mark.parametrize(("args", "message"), [
    (("abc", "--type", "float"), "'abc' is not a number"),
    (("1.5", "--type", "int"), "'1.5' is not an integer"),
    (("maybe", "--type", "bool"), "is not true/false"),
    (("1,x", "--type", "array"), "is not a list of numbers"),
    (("null",), "is not a value to write"),
    (("NaN",), "is not a finite number"),
    (("nan",), "is not a finite number"),  # not JSON, but a number all the same
    (("-inf",), "is not a finite number"),
    (("inf", "--type", "float"), "is not a finite number"),
    (("1.0", "--type", "complex"), "Invalid value for '--type'"),
])
def test_write_refuses_bad_values_as_usage_errors(env, tmp_path, args: tuple[str, ...],
                                                  message: str) -> None:
    result = run("channels", "write", "HCM1:SP", *args, env=env, cwd=tmp_path, code=2)
    assert message in result.stderr


def test_write_with_the_wrong_units_fails_before_asking(env, tmp_path) -> None:
    result = run("channels", "write", "HCM1:SP", "1.0", "--units", "mA", env=env,
                 cwd=tmp_path, code=1)
    assert "the request is in 'mA', but the channel's units are 'A'" in result.stderr
    assert Stored(env).approvals() == {}


@uses_connectors
def test_array_values_are_parsed_as_lists(tmp_path) -> None:
    env = {**environment(tmp_path, plant=True, limits={"channels": {"A:X": {
        "writable": True, "type": "array", "verification": "readback"}}}),
        "OSPREY__APPROVAL__MODE": "disabled"}
    for value, kind in (("0.1,0.2,3", ["--type", "array"]), ("[0.1, 0.2, 3]", [])):
        result = run("channels", "write", "A:X", value, *kind, "--json", env=env, cwd=tmp_path)
        [write] = json.loads(result.stdout)["context"]["channel_write"]
        assert (write["requested"], write["readback"], write["verified"]) == (
            [0.1, 0.2, 3], [0.1, 0.2, 3], True)
    scalar = run("channels", "write", "A:X", "0.5", env=env, cwd=tmp_path, code=1)
    assert "A:X: expected a list of numbers, got float" in scalar.stderr


# -- archiver -------------------------------------------------------------------------------


def test_archiver_get_summarises_and_prints_every_sample_as_json_or_csv(env, tmp_path) -> None:
    table = run("archiver", "get", "SR:CURRENT", "HCM1:SP", "--since", "2m", env=env,
                cwd=tmp_path).stdout
    for text in ("SR:CURRENT", "HCM1:SP", "samples", "mean", "--csv"):
        assert text in table
    data = as_json("archiver", "get", "SR:CURRENT", "--since", "2m", env=env, cwd=tmp_path)
    start, end = (datetime.fromisoformat(data[key]) for key in ("start", "end"))
    assert end - start == timedelta(minutes=2)
    samples = data["channels"]["SR:CURRENT"]
    assert len(samples) > 60
    assert all(start <= datetime.fromisoformat(s["timestamp"]) <= end for s in samples)
    csv_lines = run("archiver", "get", "SR:CURRENT", "--since", "2m", "--csv", env=env,
                    cwd=tmp_path).stdout.splitlines()
    assert csv_lines[0] == "channel,timestamp,value"
    channel, stamp, value = csv_lines[1].split(",")
    assert channel == "SR:CURRENT" and float(value) > 0 and datetime.fromisoformat(stamp)


def test_archiver_get_with_a_range_and_an_operator(env, tmp_path) -> None:
    end = datetime.now().astimezone().replace(microsecond=0) - timedelta(minutes=5)
    start = end - timedelta(minutes=10)
    data = as_json("archiver", "get", "SR:CURRENT", "--start", start.isoformat(), "--end",
                   end.isoformat(), "--operator", "mean_60", env=env, cwd=tmp_path)
    assert datetime.fromisoformat(data["start"]) == start
    assert data["operator"] == "mean_60"
    assert 9 <= len(data["channels"]["SR:CURRENT"]) <= 12  # one-minute bins


@uses_connectors
@pytest.mark.exercises_hook("register_archivers")
def test_archiver_get_from_a_plugin_archiver_and_its_errors(tmp_path) -> None:
    env = environment(tmp_path, plant=True)
    data = as_json("archiver", "get", "A:X", "--since", "1h", env=env, cwd=tmp_path)
    assert [sample["value"] for sample in data["channels"]["A:X"]] == [30.0, 10.0, 1.0]
    missing = run("archiver", "get", "NOPE:X", env=env, cwd=tmp_path, code=1)
    assert "archiver 'plant' has no history for NOPE:X" in missing.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--since", "ten"), "is not a time span"),
    (("--since", "0m"), "is not a time span"),
    (("--since", "1h", "--start", "2026-01-01T00:00:00Z"), "either --since or --start"),
    (("--end", "2026-01-01T00:00:00Z"), "--end needs --start"),
    (("--start", "yesterday"), "is not an ISO 8601 time"),
    (("--start", "2026-01-02T00:00:00Z", "--end", "2026-01-01T00:00:00Z"), "is not before"),
    (("--json", "--csv"), "choose one of --json and --csv"),
])
def test_archiver_get_refuses_bad_ranges(env, tmp_path, args: tuple[str, ...],
                                         message: str) -> None:
    result = run("archiver", "get", "SR:CURRENT", *args, env=env, cwd=tmp_path, code=2)
    assert message in result.stderr


def test_help_lists_the_new_commands(env, tmp_path) -> None:
    out = run("--help", env=env, cwd=tmp_path).stdout
    assert "channels" in out and "archiver" in out
    out = run("channels", "--help", env=env, cwd=tmp_path).stdout
    for command in ("read", "write", "monitor", "info"):
        assert command in out


def test_monitor_ends_cleanly_on_ctrl_c(env, tmp_path) -> None:
    import signal
    import time

    monitor = subprocess.Popen(
        [sys.executable, "-m", "osprey_core", "channels", "monitor", "SR:CURRENT"], env=env,
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert monitor.stdout is not None
        ready, _, _ = select.select([monitor.stdout], [], [], 30)
        assert ready, "the monitor printed nothing"
        time.sleep(0.2)
        monitor.send_signal(signal.SIGINT)
        _, err = monitor.communicate(timeout=30)
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.communicate(timeout=30)
    assert monitor.returncode == 0, err
    assert "Traceback" not in err and "Interrupted" not in err


# -- demo -----------------------------------------------------------------------------------

REQUIRED_SECTION_PLUGIN = """
    from pydantic import BaseModel, ConfigDict

    from osprey_core import hookimpl


    class SiteSettings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        gateway: str


    @hookimpl
    def register_config_sections(register):
        register("site", SiteSettings)
"""


@pytest.mark.parametrize("required_section", [False, True])
def test_demo_reads_asks_and_writes_on_its_own_simulated_machine(
        tmp_path, required_section: bool) -> None:
    user_state = tmp_path / "user-machine.json"
    config: dict[str, Any] = {"control_system": {"type": "epics", "writes_enabled": False},
                              "mock": {"state_file": str(user_state)}}
    site = None
    if required_section:  # the demo then takes plugin sections from the user's config
        config["site"] = {"gateway": "gw:5064"}
        site = write_distribution(tmp_path / "site", "osprey-plugin-site",
                                  entry_points={"site": "site_plugin"},
                                  modules={"site_plugin": REQUIRED_SECTION_PLUGIN})
    (tmp_path / "osprey.yml").write_text(json.dumps(config), encoding="utf-8")
    env = osprey_env(tmp_path / "home", pythonpath=site, OSPREY_STRICT_PLUGINS="1",
                     TMPDIR=str(tmp_path))  # the demo keeps its analysis there
    out = run("demo", env=env, cwd=tmp_path).stdout
    assert "osprey run 'read SR:CURRENT and HCM1:SP'" in out
    assert re.search(r"SR:CURRENT +[\d.]+ +mA ", out)  # a table, not JSON
    assert "(channel_write, step 1, run run-" in out
    assert "HCM1:SP: 0.0 A -> 1.5 A" in out
    assert "limits: min -5, max 5, max step 2; verification: readback of HCM1:RB" in out
    assert re.search(r"HCM1:SP +1\.5 +0 +[\d.]+ +ok, verified \(readback\)", out)
    assert re.search(r"HCM1:SP +1\.5 +A ", out)  # read back by the next run
    for action in ("channel_write_started", "channel_write_ok"):
        assert re.search(rf"{action} +demo-operator +via demo HCM1:SP -> 1.5 \(approval apv-",
                         out), action
    assert "Notice" not in run("demo", env=env, cwd=tmp_path).stderr
    assert not user_state.exists() and not Path(env["OSPREY_HOME"]).exists()


def test_a_negative_value_is_a_value_not_an_option(env, tmp_path) -> None:
    result = run("channels", "write", "HCM1:SP", "-1.5", "--units", "A", "--json", env=env,
                 cwd=tmp_path, code=3)
    [operation] = json.loads(result.stdout)["approval"]["artifact"]["writes"]
    assert (operation["channel"], operation["value"]) == ("HCM1:SP", -1.5)
