"""``osprey chat`` through a real subprocess fed on stdin: approvals answered inline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import Stored, assert_exit, osprey, pulse_env

pytestmark = pytest.mark.exercises_hook("register_commands")

PLANNED = "/planning what can you do?\n"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return pulse_env(tmp_path)


def chat(env: dict[str, str], cwd: Path, stdin: str, *args: str) -> str:
    """Run a chat session on ``stdin``; it must end cleanly. Returns its stdout."""
    result = osprey("chat", *args, env=env, cwd=cwd, stdin=stdin)
    assert_exit(result, 0)
    return result.stdout


def decisions(env: dict[str, str]) -> list[str]:
    """Audit actions about approvals, oldest first."""
    return [entry["action"] for entry in Stored(env).audit()
            if entry["action"].startswith("approval_")]


def test_ambiguous_reply_decides_nothing_show_prints_the_artifact_yes_approves(env, cwd):
    out = chat(env, cwd, PLANNED + "maybe\nshow\nyes\nexit\n")
    [approval] = Stored(env).approvals().values()
    assert out.count(f"approval {approval['id']} (plan") == 1  # shown once, not per prompt
    assert "'maybe' is not an answer: type yes, no, show or edit. Nothing was decided." in out
    marker = f"artifact (sha256 {approval['artifact_sha256']}):\n"
    artifact = out.split(marker)[1]
    assert json.loads(artifact[:artifact.index("\n}\n") + 2]) == approval["artifact"]
    assert "osprey>\nWhat I can do" in out
    assert (approval["status"], approval["decided_via"]) == ("approved", "chat")
    # "maybe" and "show" left no trace: one request, one decision
    assert decisions(env) == ["approval_requested", "approval_approved"]
    assert [run["state"] for run in Stored(env).runs()] == ["done"]


def test_ambiguous_reply_then_end_of_input_leaves_the_request_pending(env, cwd):
    out = chat(env, cwd, PLANNED + "yes please\n")
    [approval] = Stored(env).approvals().values()
    assert "Nothing was decided." in out
    assert f"left pending; decide later with: osprey approvals approve {approval['id']}" in out
    assert approval["status"] == "pending"
    assert decisions(env) == ["approval_requested"]
    # the pause is durable: another process decides it later
    result = osprey("approvals", "approve", approval["id"], env=env, cwd=cwd)
    assert_exit(result, 0)
    assert "What I can do" in result.stdout


@pytest.mark.parametrize("reason, recorded", [("not during beam time\n", "not during beam time"),
                                              ("\n", None)])
def test_no_rejects_with_an_optional_reason(env, cwd, reason, recorded):
    out = chat(env, cwd, PLANNED + "no\n" + reason, "--user", "ana")
    [approval] = Stored(env).approvals().values()
    [run] = Stored(env).runs()
    assert (approval["status"], approval["decided_by"], approval["decision_reason"]) == (
        "rejected", "ana", recorded)
    assert run["state"] == "rejected"
    assert f"osprey> run {run['id']} rejected: rejected by ana" in out
    assert "What I can do" not in out  # nothing ran


def test_edit_from_a_file_then_approve(env, cwd):
    (cwd / "broken.json").write_text('{"steps": [', encoding="utf-8")
    plan = {"steps": [
        {"capability": "list_capabilities", "parameters": {}, "output": "caps"},
        {"capability": "respond", "parameters": {"message": "Edited in chat."},
         "inputs": ["caps"], "output": "answer"}]}
    (cwd / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    out = chat(env, cwd, PLANNED + "edit\nbroken.json\nedit\n\nedit\nplan.json\nyes\n")
    first, second = Stored(env).approvals().values()
    assert "edit refused, the plan is unchanged: broken.json:1:12: not valid JSON" in out
    assert "the plan is unchanged." in out  # the empty answer keeps the plan
    assert f"{first['id']} is superseded by the edited plan:" in out
    assert f"approval {second['id']} (plan" in out  # the new request is shown
    assert (first["status"], second["status"]) == ("superseded", "approved")
    assert "osprey> Edited in chat." in out
    assert decisions(env) == ["approval_requested", "approval_superseded",
                              "approval_requested", "approval_approved"]


@pytest.mark.exercises_hook("register_capabilities")
def test_step_requests_cannot_be_edited_and_end_of_input_keeps_them(env, cwd):
    out = chat(env, cwd, "pulse the magnet\nedit\n")
    [approval] = Stored(env).approvals().values()
    assert "this channel_write approval cannot be edited; approve or reject it." in out
    assert approval["status"] == "pending" and approval["kind"] == "step"


def test_errors_are_reported_and_the_chat_goes_on(env, cwd):
    out = chat(env, cwd, "/planning\n\nwhat can you do?\nquit\nwhat can you do?\n",
               "--session", "s1")
    assert "error: the request is empty" in out
    assert out.count("osprey>\nWhat I can do") == 1  # 'quit' ended the session
    [run] = Stored(env).runs()
    assert (run["state"], run["session"], run["interface"]) == ("done", "s1", "chat")


def test_a_memory_save_is_edited_inline_and_exactly_the_edit_is_saved(env, cwd):
    edited = cwd / "memory.json"
    edited.write_text(json.dumps({"user": "ana", "text": "my BPM set is BPM01-BPM05",
                                  "tags": []}), encoding="utf-8")
    out = chat(env, cwd, "remember that my BPM set is BPM01-BPM04\nedit\nmemory.json\nyes\n"
               "exit\n", "--user", "ana")
    first, second = sorted(Stored(env).approvals().values(), key=lambda a: a["created_at"])
    assert first["status"] == "superseded" and second["status"] == "approved"
    assert second["artifact"]["text"] == "my BPM set is BPM01-BPM05"
    assert f"{first['id']} is superseded by the edited memory_save:" in out
    listed = osprey("memory", "list", "--user", "ana", "--json", env=env, cwd=cwd)
    assert [entry["text"] for entry in json.loads(listed.stdout)] == ["my BPM set is BPM01-BPM05"]
