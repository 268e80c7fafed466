"""``osprey run``, ``approvals``, ``runs`` and ``demo`` end to end, in real subprocesses.

Every command runs as its own process against one home directory, so each decision is
made by a process that did not start the run, and is checked in the store afterwards.
"""

from __future__ import annotations

import getpass
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import Stored, assert_exit, json_of, osprey, pulse_env
from support.dist import write_distribution

from osprey_core.models import sha256_of
from osprey_core.testing.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.exercises_hook("register_commands")
uses_pulse = pytest.mark.exercises_hook("register_capabilities")

ASK = "what can you do?"
APPROVAL_ID = re.compile(r"apv-[0-9a-f]{12}")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return pulse_env(tmp_path)


@pytest.fixture
def stored(env: dict[str, str]) -> Stored:
    return Stored(env)


def pause(env: dict[str, str], cwd: Path, query: str = f"/planning {ASK}") -> str:
    """Start a run that stops for approval; returns the approval id it printed."""
    result = osprey("run", query, env=env, cwd=cwd)
    assert_exit(result, 3)
    found = APPROVAL_ID.findall(result.stdout)
    assert found, result.stdout
    return found[0]


def edited_plan(message: str = "Edited by the operator.") -> dict[str, object]:
    return {"steps": [
        {"capability": "list_capabilities", "parameters": {}, "output": "caps"},
        {"capability": "respond", "parameters": {"message": message}, "inputs": ["caps"],
         "output": "answer"},
    ]}


# -- osprey run ----------------------------------------------------------------------------


def test_run_without_approval_exits_0_with_the_answer(env, cwd, stored):
    result = osprey("run", ASK, env=env, cwd=cwd)
    assert_exit(result, 0)
    assert "What I can do" in result.stdout
    assert re.search(r"pulse_magnet +Pulse the test magnet", result.stdout)
    [run] = stored.runs()
    assert run["state"] == "done" and run["approval_id"] is None
    assert run["user"] == getpass.getuser()  # --user defaults to the login name
    assert (run["session"], run["interface"]) == ("default", "cli")


def test_planning_mode_pauses_with_exit_3_and_says_how_to_decide(env, cwd, stored):
    ways = [("run", f"/planning {ASK}"), ("run", "--planning", ASK),
            ("run", ASK, "--planning", "--session", "ops", "-u", "ana")]
    printed = []
    for args in ways:
        result = osprey(*args, env=env, cwd=cwd)
        assert_exit(result, 3)
        approval_id = APPROVAL_ID.findall(result.stdout)[0]
        assert f"waiting for approval {approval_id}" in result.stdout
        assert f"osprey approvals approve {approval_id}" in result.stdout
        assert f"osprey approvals reject {approval_id}" in result.stdout
        assert "1. list_capabilities -> " in result.stdout  # the plan itself is shown
        printed.append(approval_id)
    pending = stored.approvals()
    assert list(pending) == printed
    assert {(a["kind"], a["status"]) for a in pending.values()} == {("plan", "pending")}
    runs = stored.runs()[::-1]
    assert [run["approval_id"] for run in runs] == printed
    assert {(run["state"], run["query"]) for run in runs} == {("awaiting_plan_approval", ASK)}
    assert (runs[2]["session"], runs[2]["user"], pending[printed[2]]["requested_by"]) == (
        "ops", "ana", "ana")


def test_run_json_carries_state_and_the_exact_approval(env, cwd):
    result = osprey("run", "--planning", ASK, "--json", env=env, cwd=cwd)
    assert_exit(result, 3)
    run = json.loads(result.stdout)
    assert run["state"] == "awaiting_plan_approval"
    approval = run["approval"]
    assert approval["id"] == run["approval_id"] and approval["status"] == "pending"
    assert approval["artifact"] == run["plan"]
    assert approval["artifact_sha256"] == sha256_of(approval["artifact"]) == run["plan_sha256"]

    done = osprey("run", ASK, "--json", env=env, cwd=cwd)
    assert_exit(done, 0)
    finished = json.loads(done.stdout)
    assert finished["state"] == "done" and finished["approval"] is None
    assert "list_capabilities" in finished["response"]


def test_empty_request_is_a_usage_error(env, cwd):
    for query in ("  ", "/planning "):
        result = osprey("run", query, env=env, cwd=cwd)
        assert_exit(result, 2)
        assert "Invalid value for 'QUERY': the request is empty" in result.stderr
    assert not Path(env["OSPREY_HOME"], "osprey.db").exists()


# -- osprey approvals ----------------------------------------------------------------------


def test_approvals_list_pending_json_and_show(env, cwd, stored):
    decided = pause(env, cwd)
    assert_exit(osprey("approvals", "approve", decided, env=env, cwd=cwd), 0)
    waiting = pause(env, cwd)

    table = osprey("approvals", "list", env=env, cwd=cwd)
    assert_exit(table, 0)
    rows = [line for line in table.stdout.splitlines() if "apv-" in line]
    assert len(rows) == 2
    assert decided in rows[0] and "approved" in rows[0] and "plan" in rows[0]
    assert waiting in rows[1] and "pending" in rows[1]
    records = stored.approvals()
    assert json_of("approvals", "list", "--pending", env=env, cwd=cwd) == [records[waiting]]

    shown = osprey("approvals", "show", waiting, env=env, cwd=cwd)
    assert_exit(shown, 0)
    record = records[waiting]
    assert record["artifact_sha256"] == sha256_of(record["artifact"])
    marker = f"artifact (sha256 {record['artifact_sha256']}):\n"
    assert marker in shown.stdout
    assert json.loads(shown.stdout.split(marker)[1]) == record["artifact"]
    assert json_of("approvals", "show", decided, env=env, cwd=cwd) == records[decided]


def test_approve_from_a_second_process_completes_the_run_once(env, cwd, stored):
    approval_id = pause(env, cwd)
    result = osprey("approvals", "approve", approval_id, "--reason", "checked the plan",
                    "--user", "shift-leader", env=env, cwd=cwd)
    assert_exit(result, 0)
    assert result.stdout.startswith("What I can do")
    record = stored.approvals()[approval_id]
    assert (record["status"], record["decided_by"], record["decided_via"],
            record["decision_reason"]) == ("approved", "shift-leader", "cli", "checked the plan")
    assert [run["state"] for run in stored.runs()] == ["done"]

    again = osprey("approvals", "approve", approval_id, env=env, cwd=cwd)
    assert_exit(again, 1)
    assert f"Error: approval {approval_id} is already approved by shift-leader" in again.stderr
    late = osprey("approvals", "reject", approval_id, env=env, cwd=cwd)
    assert_exit(late, 1)
    assert "already approved" in late.stderr
    decisions = [entry for entry in stored.audit() if entry["approval_id"] == approval_id]
    assert [entry["action"] for entry in decisions] == ["approval_requested",
                                                        "approval_approved",
                                                        "approval_refused", "approval_refused"]


def test_unknown_approval_and_wrong_session_are_refused(env, cwd, stored):
    for command in ("approve", "show"):
        result = osprey("approvals", command, "apv-000000000000", env=env, cwd=cwd)
        assert_exit(result, 1)
        assert "Error: unknown approval 'apv-000000000000'" in result.stderr
    approval_id = pause(env, cwd)
    foreign = osprey("approvals", "approve", approval_id, "--session", "other", env=env,
                     cwd=cwd)
    assert_exit(foreign, 1)
    assert "belongs to another session, not 'other'" in foreign.stderr
    assert stored.approvals()[approval_id]["status"] == "pending"


def test_reject_ends_the_run_as_rejected(env, cwd, stored):
    approval_id = pause(env, cwd)
    result = osprey("approvals", "reject", approval_id, "-r", "not during beam time",
                    env=env, cwd=cwd)
    assert_exit(result, 0)
    [run] = stored.runs()
    assert result.stdout == f"rejected {approval_id}; run {run['id']} is rejected\n"
    shown = osprey("runs", "show", run["id"], env=env, cwd=cwd)
    assert_exit(shown, 0)
    assert f"run {run['id']}: rejected" in shown.stdout
    assert "error: rejected by " in shown.stdout and ": not during beam time" in shown.stdout
    assert f"approval {approval_id} (plan): rejected" in shown.stdout
    assert "1. [not run] list_capabilities -> list_capabilities" in shown.stdout
    assert stored.approvals()[approval_id]["decision_reason"] == "not during beam time"
    late = osprey("approvals", "approve", approval_id, env=env, cwd=cwd)
    assert_exit(late, 1)
    assert "already rejected" in late.stderr


def test_expired_request_counts_as_rejected(tmp_path, cwd):
    env = pulse_env(tmp_path, OSPREY__APPROVAL__EXPIRY_SECONDS="1")
    approval_id = pause(env, cwd)
    time.sleep(1.1)
    [record] = json_of("approvals", "list", env=env, cwd=cwd)  # listing expires it
    assert (record["id"], record["status"]) == (approval_id, "expired")
    result = osprey("approvals", "approve", approval_id, env=env, cwd=cwd)
    assert_exit(result, 1)
    assert f"approval {approval_id} is already expired" in result.stderr
    assert [run["state"] for run in Stored(env).runs()] == ["expired"]


# -- osprey approvals edit -----------------------------------------------------------------


def test_edit_supersedes_and_the_edited_plan_runs(env, cwd, stored):
    original = pause(env, cwd)
    (cwd / "edited.json").write_text(json.dumps(edited_plan()), encoding="utf-8")
    result = osprey("approvals", "edit", original, "edited.json", env=env, cwd=cwd)
    assert_exit(result, 3)
    edited = next(found for found in APPROVAL_ID.findall(result.stdout) if found != original)
    assert f"{original} is superseded" in result.stdout
    assert f"osprey approvals approve {edited}" in result.stdout
    records = stored.approvals()
    assert records[original]["status"] == "superseded"
    assert records[edited]["status"] == "pending"
    assert records[edited]["artifact"]["steps"][1]["parameters"] == {
        "message": "Edited by the operator."}

    stale = osprey("approvals", "approve", original, env=env, cwd=cwd)
    assert_exit(stale, 1)
    assert f"approval {original} is already superseded" in stale.stderr
    done = osprey("approvals", "approve", edited, env=env, cwd=cwd)
    assert_exit(done, 0)
    assert done.stdout.startswith("Edited by the operator.")


BAD_PLAN_FILES = [
    ("truncated.json", '{"steps": [', 1,
     r"truncated\.json:1:12: not valid JSON: Expecting value"),
    ("list.json", "[1, 2]", 1,
     r"list\.json: the plan is invalid \(1 problem\):\n- a plan must be an object"),
    ("warp.json", json.dumps({"steps": [{"capability": "warp_drive", "output": "x"}]}), 1,
     r"warp\.json: the plan is invalid.*:\n- step 1 \(capability 'warp_drive'\): no "
     r"capability named 'warp_drive' is registered"),
    ("latin1.json", b'{"steps": "\xff"}', 1, r"latin1\.json: not UTF-8 text"),
    ("missing.json", None, 2, r"'FILE': file 'missing.json' does not exist"),
]


def test_edit_with_a_bad_file_changes_nothing(env, cwd, stored):
    approval_id = pause(env, cwd)
    before = stored.approvals(), stored.runs()
    plan_file = Path(env["OSPREY_HOME"], "plans", f"{before[1][0]['id']}.json")
    plan_text = plan_file.read_text(encoding="utf-8")
    for name, content, code, message in BAD_PLAN_FILES:
        if isinstance(content, str):
            (cwd / name).write_text(content, encoding="utf-8")
        elif content is not None:
            (cwd / name).write_bytes(content)
        result = osprey("approvals", "edit", approval_id, name, env=env, cwd=cwd)
        assert_exit(result, code)
        assert re.search(message, result.stderr), result.stderr
        if "the plan is invalid" in message:
            assert f"Nothing changed: {approval_id} is still pending." in result.stderr
    (cwd / "good.json").write_text(json.dumps(edited_plan()), encoding="utf-8")
    unknown = osprey("approvals", "edit", "apv-000000000000", "good.json", env=env, cwd=cwd)
    assert_exit(unknown, 1)
    assert "unknown approval 'apv-000000000000'" in unknown.stderr

    assert (stored.approvals(), stored.runs()) == before
    assert plan_file.read_text(encoding="utf-8") == plan_text
    # the request (and the plan file it is bound to) is still approvable: nothing was lost
    assert_exit(osprey("approvals", "approve", approval_id, env=env, cwd=cwd), 0)


# -- side-effecting steps ------------------------------------------------------------------


@uses_pulse
def test_step_approval_binds_the_exact_write(tmp_path, env, cwd, stored):
    log = tmp_path / "pulses.log"
    env = {**env, "PULSE_LOG": str(log)}
    approval_id = pause(env, cwd, "pulse the magnet")
    record = stored.approvals()[approval_id]
    assert (record["kind"], record["action"], record["step_index"]) == (
        "step", "channel_write", 0)
    assert record["artifact"] == {"capability": "pulse_magnet", "parameters": {"amps": 2.5}}
    assert not log.exists()  # nothing touched the machine before the approval

    (cwd / "plan.json").write_text(json.dumps(edited_plan()), encoding="utf-8")
    edit = osprey("approvals", "edit", approval_id, "plan.json", env=env, cwd=cwd)
    assert_exit(edit, 1)
    assert "artifacts cannot be edited; approve or reject it" in edit.stderr

    result = osprey("approvals", "approve", approval_id, env=env, cwd=cwd)
    assert_exit(result, 0)
    assert "pulsed_amps: 2.5" in result.stdout
    assert log.read_text().splitlines() == [f"{record['run_id']} 2.5"]


@uses_pulse
def test_cancel_a_paused_run_withdraws_its_approval(env, cwd, stored):
    approval_id = pause(env, cwd, "pulse the magnet")
    [run] = stored.runs()
    result = osprey("runs", "cancel", run["id"], "--reason", "beam dump", env=env, cwd=cwd)
    assert_exit(result, 0)
    assert result.stdout == f"run {run['id']} cancelled\napproval {approval_id} withdrawn\n"
    assert stored.approvals()[approval_id]["status"] == "withdrawn"
    assert stored.runs()[0]["error"] == "beam dump"
    late = osprey("approvals", "approve", approval_id, env=env, cwd=cwd)
    assert_exit(late, 1)
    assert "already withdrawn" in late.stderr
    again = osprey("runs", "cancel", run["id"], env=env, cwd=cwd)
    assert_exit(again, 1)
    assert f"run {run['id']} has already ended (cancelled)" in again.stderr
    unknown = osprey("runs", "cancel", "run-000000000000", env=env, cwd=cwd)
    assert_exit(unknown, 1)
    assert "unknown run 'run-000000000000'" in unknown.stderr


@uses_pulse
@pytest.mark.parametrize("outcome", ["applied", "not_applied"])
def test_crash_mid_write_needs_an_operator_to_resume(tmp_path, env, cwd, stored, outcome):
    log = tmp_path / "pulses.log"
    env = {**env, "PULSE_LOG": str(log)}
    approval_id = pause(env, cwd, "pulse the magnet")
    crashed = osprey("approvals", "approve", approval_id, env={**env, "PULSE_CRASH": "1"},
                     cwd=cwd)
    assert crashed.returncode == 9  # the process died inside the write
    assert len(log.read_text().splitlines()) == 1
    [run] = stored.runs()

    blind = osprey("runs", "resume", run["id"], env=env, cwd=cwd)
    assert_exit(blind, 1)
    assert "step 1 (pulse_magnet)" in blind.stderr and "--indeterminate" in blind.stderr
    assert stored.runs()[0]["state"] == "interrupted"
    assert len(log.read_text().splitlines()) == 1  # never retried blindly

    resumed = osprey("runs", "resume", run["id"], "--indeterminate", outcome, env=env, cwd=cwd)
    if outcome == "applied":
        assert_exit(resumed, 0)
        assert len(log.read_text().splitlines()) == 1
    else:  # run again, but only after a fresh approval of the same write
        assert_exit(resumed, 3)
        fresh = APPROVAL_ID.findall(resumed.stdout)[0]
        assert fresh != approval_id
        assert len(log.read_text().splitlines()) == 1
        assert_exit(osprey("approvals", "approve", fresh, env=env, cwd=cwd), 0)
        assert len(log.read_text().splitlines()) == 2
    assert stored.runs()[0]["state"] == "done"
    resolved = [entry["details"] for entry in stored.audit() if entry["action"] ==
                "step_resolved"]
    assert resolved == [{"step": 1, "capability": "pulse_magnet", "outcome": outcome}]


def test_resume_refuses_runs_that_are_not_interrupted(env, cwd):
    unknown = osprey("runs", "resume", "run-000000000000", env=env, cwd=cwd)
    assert_exit(unknown, 1)
    assert "Error: unknown run 'run-000000000000'" in unknown.stderr
    bad = osprey("runs", "resume", "run-000000000000", "--indeterminate", "maybe", env=env,
                 cwd=cwd)
    assert_exit(bad, 2)
    assert "'maybe' is not one of 'applied', 'not_applied'" in bad.stderr
    approval_id = pause(env, cwd)
    [paused] = Stored(env).runs()
    waiting = osprey("runs", "resume", paused["id"], env=env, cwd=cwd)
    assert_exit(waiting, 1)
    assert f"is waiting for approval {approval_id}; approve or reject it" in waiting.stderr
    assert_exit(osprey("approvals", "approve", approval_id, env=env, cwd=cwd), 0)
    finished = osprey("runs", "resume", paused["id"], env=env, cwd=cwd)
    assert_exit(finished, 1)
    assert f"run {paused['id']} is done; only interrupted runs resume" in finished.stderr


# -- osprey runs ---------------------------------------------------------------------------


def test_runs_list_show_and_events(env, cwd):
    assert_exit(osprey("run", ASK, env=env, cwd=cwd), 0)
    approval_id = pause(env, cwd)
    paused, done = json_of("runs", "list", env=env, cwd=cwd)  # newest first
    assert (paused["state"], done["state"]) == ("awaiting_plan_approval", "done")
    assert paused["approval"]["id"] == approval_id and done["approval"] is None

    table = osprey("runs", "list", "--state", "awaiting_plan_approval", env=env, cwd=cwd)
    assert_exit(table, 0)
    assert paused["id"] in table.stdout and done["id"] not in table.stdout
    [row] = [line for line in table.stdout.splitlines() if paused["id"] in line]
    assert "awaiting_plan_approval" in row and approval_id in row and ASK in row
    bad_state = osprey("runs", "list", "--state", "finished", env=env, cwd=cwd)
    assert_exit(bad_state, 2)
    assert "'finished' is not one of" in bad_state.stderr

    shown = osprey("runs", "show", done["id"], "--events", env=env, cwd=cwd)
    assert_exit(shown, 0)
    assert f"run {done['id']}: done" in shown.stdout
    assert "1. [succeeded] list_capabilities -> list_capabilities" in shown.stdout
    assert "2. [succeeded] respond reads list_capabilities -> response" in shown.stdout
    assert "answer:\nWhat I can do" in shown.stdout
    assert shown.stdout.index("events:") < shown.stdout.index(
        'state {"from":"responding","to":"done"}')

    detail = json_of("runs", "show", paused["id"], "--events", env=env, cwd=cwd)
    assert [approval["id"] for approval in detail["approvals"]] == [approval_id]
    assert detail["steps"] == []
    kinds = [event["kind"] for event in detail["events"]]
    assert kinds == ["submitted", "state", "state", "state"]
    assert detail["events"][-1]["data"] == {"from": "planning", "to": "awaiting_plan_approval"}

    unknown = osprey("runs", "show", "run-000000000000", env=env, cwd=cwd)
    assert_exit(unknown, 1)
    assert "unknown run 'run-000000000000'" in unknown.stderr


# -- the LLM endpoint ----------------------------------------------------------------------


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(models=("plan-model",)) as server:
        yield server


def llm_env(tmp_path: Path, server: FakeOpenAIServer) -> dict[str, str]:
    return pulse_env(tmp_path, OSPREY__LLM__BASE_URL=server.base_url,
                     OSPREY__LLM__MODEL="plan-model", OSPREY__LLM__MAX_ATTEMPTS="2",
                     OSPREY__LLM__BACKOFF_SECONDS="0", OSPREY__LLM__TIMEOUT_SECONDS="10",
                     OPENAI_API_KEY="sk-cli-test")


def test_run_plans_with_the_configured_llm(tmp_path, cwd, llm):
    env = llm_env(tmp_path, llm)
    llm.script(json.dumps({"reasoning": "list them", **edited_plan("From the model.")}))
    result = osprey("run", "/planning tell me your skills", env=env, cwd=cwd)
    assert_exit(result, 3)
    assert llm.calls == 1
    assert llm.requests[0]["model"] == "plan-model"
    assert llm.headers[0]["authorization"] == "Bearer sk-cli-test"
    assert llm.requests[0]["messages"][-1] == {"role": "user",
                                               "content": "tell me your skills"}
    approval_id = APPROVAL_ID.findall(result.stdout)[0]
    done = osprey("approvals", "approve", approval_id, env=env, cwd=cwd)
    assert_exit(done, 0)
    assert done.stdout.startswith("From the model.")
    assert llm.calls == 1  # the approved plan runs as stored: no second planning call


def test_llm_that_never_answers_with_a_plan_fails_the_run(tmp_path, cwd, llm):
    env = llm_env(tmp_path, llm)
    llm.default_reply = "Sure! I would love to help with the accelerator."
    result = osprey("run", "read the beam current", env=env, cwd=cwd)
    assert_exit(result, 1)
    assert "failed: planning failed: no valid plan from model 'plan-model'" in result.stderr
    assert "after 2 attempts" in result.stderr
    assert llm.calls == 2
    [run] = Stored(env).runs()
    assert run["state"] == "failed" and "no valid plan" in run["error"]


# -- osprey demo ---------------------------------------------------------------------------


def test_demo_walks_the_round_trip_without_touching_the_users_data(env, cwd):
    (cwd / "osprey.yml").write_text("planing: {}\n", encoding="utf-8")  # broken on purpose
    env = {**env, "OSPREY__LLM__BASE_URL": "http://127.0.0.1:9/v1",  # nothing listens there
           "TMPDIR": str(cwd)}  # where the demo keeps what it made
    result = osprey("demo", env=env, cwd=cwd)
    assert_exit(result, 0)
    out = result.stdout
    approval_id = APPROVAL_ID.findall(out)[0]
    assert "The run pauses (awaiting_plan_approval)" in out
    assert f"approval {approval_id} (plan, run run-" in out
    assert f"osprey approvals approve {approval_id}" in out
    assert "The run is done. Its answer:\nWhat I can do" in out
    assert "approval_approved    demo-shift-leader" in out
    assert f"refused: approval {approval_id} is already approved by demo-shift-leader" in out
    assert not Path(env["OSPREY_HOME"]).exists()
    kept = Path(out.rstrip().rsplit("is kept in ", 1)[1].rstrip("."))
    assert kept.parent == cwd and kept.name.startswith("osprey-demo-results-")
    assert (kept / "notebook.ipynb").is_file() and list((kept / "figures").glob("*.png"))


def test_demo_keeps_its_data_in_home_when_asked(tmp_path, env, cwd):
    home = tmp_path / "demo-home"
    result = osprey("demo", "--home", str(home), env=env, cwd=cwd)
    assert_exit(result, 0)
    assert f"kept in {home}" in result.stdout
    runs = Stored({"OSPREY_HOME": str(home)}).runs()
    # the planning round trip, a read, the approved write, a read, the sandboxed analysis,
    # the agent's logbook search
    assert len(runs) == 6
    assert (home / "logbook.db").exists()
    assert "figure:" in result.stdout and "notebook:" in result.stdout
    assert "the analysis's figure and notebook are in " in result.stdout
    for run in runs:
        assert (run["state"], run["session"], run["interface"]) == ("done", "demo", "demo")
    assert not Path(env["OSPREY_HOME"]).exists()


BEAMLINE_PLUGIN = """
    from pydantic import BaseModel, ConfigDict

    from osprey_core import hookimpl


    class BeamlineSettings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        gateway: str


    @hookimpl
    def register_config_sections(register):
        register("beamline", BeamlineSettings)
"""


@pytest.mark.exercises_hook("register_config_sections")
def test_demo_takes_required_plugin_settings_but_never_the_core_ones(tmp_path, env, cwd):
    write_distribution(tmp_path / "site", "osprey-plugin-beamline",
                       entry_points={"beamline": "beamline_plugin"},
                       modules={"beamline_plugin": BEAMLINE_PLUGIN})
    (cwd / "osprey.yml").write_text(
        "beamline:\n  gateway: gw.example:5064\n"
        "llm:\n  base_url: http://127.0.0.1:9/v1\n"  # would fail: nothing listens there
        "planning:\n  enabled: false\n"
        "approval:\n  expiry_seconds: 0.001\n", encoding="utf-8")
    result = osprey("demo", env={**env, "TMPDIR": str(cwd)}, cwd=cwd)
    assert_exit(result, 0)
    assert "The run is done." in result.stdout
    assert not Path(env["OSPREY_HOME"]).exists()
