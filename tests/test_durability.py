"""Durability across real processes: pauses outlive them, kills are recovered, races lose;
on both store engines (SQLite, and processes sharing one PostgreSQL database).

Every subprocess loads the test capabilities as an installed distribution (strict plugin
loading, nothing else but the built-ins), plans through the real ``openai`` client against
the :class:`FakeOpenAIServer` running in this process, and records each step execution in
the ledger directory, which this process reads to count executions across processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from support.orchestration import TIMEOUT, Lab, json_out, pid_gone, plan_reply, respond, step
from support.postgres import StoreEngine, lab_on

from osprey_core.errors import RunError
from osprey_core.models import ApprovalStatus, Plan, PlanStep, RunRecord, StepStatus
from osprey_core.run_machine import RunState
from osprey_core.testing.openai_server import FakeOpenAIServer


@pytest.fixture
def lab(llm_lab: Lab, run_store_engine: StoreEngine) -> Iterator[Lab]:
    """Every lab here plans through the LLM planner and the fake server, and keeps its
    runs in each store engine in turn (every process is given the same store.url)."""
    yield from lab_on(llm_lab, run_store_engine)


def finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=TIMEOUT)
    return process.returncode, out, err


# -- a pause outlives its process --------------------------------------------------------


def test_run_paused_by_an_exited_process_is_approved_from_another_with_no_llm_call(
    lab: Lab, server: FakeOpenAIServer,
) -> None:
    server.script(plan_reply(step("read_beam", "beam"), step("set_magnet", "magnet", value=4.0),
                             respond("beam", "magnet")))

    started = lab.call("run", "read the beam current, then set the magnet to 4", "--json")

    assert started.returncode == 3, started.stderr
    paused = json_out(started)
    assert paused["state"] == "awaiting_step_approval"
    assert paused["approval"]["artifact"] == {"channel": "MAG:CURRENT", "value": 4.0}
    assert lab.ledger.counts() == {"read_beam": 1}
    calls = server.calls
    assert calls == 1

    approved = lab.call("approvals", "approve", paused["approval"]["id"], "--user", "bob",
                        "--json")

    assert approved.returncode == 0, approved.stderr
    assert json_out(approved)["state"] == "done"
    assert server.calls == calls
    assert lab.ledger.counts() == {"read_beam": 1, "set_magnet": 1}
    [write] = lab.ledger.entries("set_magnet")
    assert write["artifact"] == paused["approval"]["artifact"]
    audit = lab.osprey().audit(run_id=paused["id"])
    [decision] = [entry for entry in audit if entry.action == "approval_approved"]
    assert (decision.actor, decision.interface, decision.sha256) == (
        "bob", "cli", paused["approval"]["artifact_sha256"])


def test_run_paused_by_a_sigkilled_process_is_approved_from_a_new_one(
    lab: Lab, server: FakeOpenAIServer,
) -> None:
    server.script(plan_reply(step("set_magnet", "magnet", value=4.0), respond("magnet")))
    holder = lab.start("run", "--planning", "--hold", "set the magnet to 4",
                       module="osprey_orch_driver")
    paused = lab.read_line(holder)
    assert paused["state"] == "awaiting_plan_approval"
    lab.kill(holder)
    assert pid_gone(holder.pid)
    calls = server.calls
    assert calls == 1

    plan_approved = lab.call("approvals", "approve", paused["approval_id"], "--json")

    assert plan_approved.returncode == 3, plan_approved.stderr
    step_pause = json_out(plan_approved)
    assert step_pause["state"] == "awaiting_step_approval"
    assert lab.ledger.counts() == {}

    done = lab.call("approvals", "approve", step_pause["approval"]["id"], "--json")

    assert done.returncode == 0, done.stderr
    assert json_out(done)["state"] == "done"
    assert server.calls == calls
    assert lab.ledger.counts() == {"set_magnet": 1}


# -- a process killed while a step runs ---------------------------------------------------


def test_read_only_step_killed_mid_execution_is_not_finished_and_reruns(
    lab: Lab, server: FakeOpenAIServer,
) -> None:
    server.script(plan_reply(step("read_beam", "beam"), step("slow_read", "history"),
                             respond("beam", "history")))
    runner = lab.start("run", "read the beam current, then slow read its history")
    lab.ledger.wait_for("slow_read", process=runner)
    lab.kill(runner)

    osprey = lab.osprey()
    [run] = osprey.runs()
    assert run.state is RunState.EXECUTING  # as the dead process left it
    osprey.refresh()

    run = osprey.get_run(run.id)
    assert run.state is RunState.INTERRUPTED
    # Only the finished step has a record: a read-only step is recorded when it finishes
    # (no synced "running" mark is needed, a crash simply leaves it to run again).
    assert [(record.index, record.status) for record in osprey.steps(run.id)] == [
        (0, StepStatus.SUCCEEDED)]
    assert run.next_step == 1
    [interrupted] = [entry for entry in osprey.audit(run_id=run.id)
                     if entry.action == "run_interrupted"]
    assert interrupted.details == {"previous_state": "executing", "owner_pid": runner.pid}
    calls = server.calls

    lab.ledger.release()
    done = osprey.resume(run.id, user="bob")

    assert done.state is RunState.DONE
    assert lab.ledger.counts() == {"read_beam": 1, "slow_read": 2}
    assert server.calls == calls


@pytest.mark.parametrize("outcome", ["applied", "not_applied"])
def test_side_effecting_step_killed_mid_execution_is_indeterminate_until_an_operator_decides(
    lab: Lab, server: FakeOpenAIServer, outcome: str,
) -> None:
    lab.configure(approval={"capabilities": {"set_magnet": "disabled"}})
    server.script(plan_reply(step("set_magnet", "magnet", value=4.0), step("slow_write", "ramp"),
                             respond("magnet", "ramp")))
    started = lab.call("run", "set the magnet to 4, then slow ramp it", "--json")
    assert started.returncode == 3, started.stderr
    paused = json_out(started)
    assert lab.ledger.counts() == {"set_magnet": 1}
    approver = lab.start("approvals", "approve", paused["approval"]["id"])
    lab.ledger.wait_for("slow_write", process=approver)
    lab.kill(approver)

    osprey = lab.osprey()
    osprey.refresh()
    run_id = paused["id"]
    assert osprey.get_run(run_id).state is RunState.INTERRUPTED
    steps = osprey.steps(run_id)
    assert [record.status for record in steps] == [StepStatus.SUCCEEDED,
                                                   StepStatus.INDETERMINATE]
    with pytest.raises(RunError, match=r"step 2 \(slow_write\) of run .* started but did not "
                       "finish, so it may have taken effect"):
        osprey.resume(run_id, user="bob")
    assert osprey.get_run(run_id).state is RunState.INTERRUPTED
    assert osprey.steps(run_id) == steps
    assert lab.ledger.counts() == {"set_magnet": 1, "slow_write": 1}

    lab.ledger.release()
    resumed = osprey.resume(run_id, user="bob", indeterminate=outcome)  # type: ignore[arg-type]

    if outcome == "applied":
        assert resumed.state is RunState.DONE
        assert lab.ledger.counts() == {"set_magnet": 1, "slow_write": 1}
    else:
        # Running it again is a new action: it needs a fresh approval.
        assert resumed.state is RunState.AWAITING_STEP_APPROVAL
        assert resumed.approval_id != paused["approval"]["id"]
        assert lab.ledger.counts() == {"set_magnet": 1, "slow_write": 1}
        assert osprey.approve(resumed.approval_id or "").state is RunState.DONE
        assert lab.ledger.counts() == {"set_magnet": 1, "slow_write": 2}
    [resolved] = [entry for entry in osprey.audit(run_id=run_id)
                  if entry.action == "step_resolved"]
    assert (resolved.actor, resolved.details) == (
        "bob", {"step": 2, "capability": "slow_write", "outcome": outcome})
    assert server.calls == 1


# -- two processes racing on one approval -------------------------------------------------


def test_two_processes_racing_to_approve_one_request_exactly_one_wins(
    lab: Lab, server: FakeOpenAIServer,
) -> None:
    server.script(plan_reply(step("set_magnet", "magnet", value=4.0), respond("magnet")))
    osprey = lab.osprey()
    run = osprey.run("set the magnet to 4")
    approval_id = run.approval_id or ""
    barrier = lab.root / "barrier"

    # Both read the request as pending before either commits: the store's compare-and-set
    # is all that stands between them.
    racers = {name: lab.start("approve", approval_id, "--user", name, "--barrier",
                              str(barrier), module="osprey_orch_driver")
              for name in ("alice", "bob")}
    results = {name: finished(process) for name, process in racers.items()}

    assert sorted(code for code, _, _ in results.values()) == [0, 1], results
    [winner] = [name for name, (code, _, _) in results.items() if code == 0]
    [loser] = [name for name, (code, _, _) in results.items() if code == 1]
    assert json.loads(results[winner][1]) == {"ok": True, "state": "done"}
    lost = json.loads(results[loser][1])
    assert lost["ok"] is False
    assert f"approval {approval_id} was decided elsewhere first" in lost["error"]
    assert lab.ledger.count("set_magnet") == 1
    record = osprey.approval(approval_id)
    assert (record.status, record.decided_by) == (ApprovalStatus.APPROVED, winner)
    decisions = [entry.actor for entry in osprey.audit(run_id=run.id)
                 if entry.action == "approval_approved"]
    assert decisions == [winner]
    assert osprey.get_run(run.id).state is RunState.DONE

    # A late third approval from the CLI is an explicit error too.
    late = lab.call("approvals", "approve", approval_id)
    assert late.returncode == 1
    assert f"approval {approval_id} is already approved by {winner}" in late.stderr
    assert lab.ledger.count("set_magnet") == 1
    assert server.calls == 1


def test_two_processes_recovering_one_dead_run_do_not_trip_over_each_other(
    lab: Lab, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Right after a crash every process recovers on its first call; only one may win."""
    first, second = lab.osprey(), lab.osprey()
    now = datetime.now(UTC)
    plan = Plan(steps=[PlanStep(capability="read_beam", output="beam"),
                       PlanStep(capability="respond", inputs=["beam"], output="answer")])
    dead = RunRecord(id="run-dead", session="s", user="alice", query="beam current?",
                     state=RunState.EXECUTING, plan=plan, plan_sha256=plan.sha256(),
                     owner_pid=os.getpid(), owner_boot="a-boot-before-the-crash",
                     created_at=now, updated_at=now)
    with first.runtime.store.transaction() as tx:
        tx.insert_run(dead)
    listed, armed, errors = second.runtime.store.steps, [True], []

    def recover_elsewhere() -> None:
        try:
            first.refresh()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def steps_then_lose_the_race(run_id: str) -> Any:
        if armed:
            armed.clear()
            other = threading.Thread(target=recover_elsewhere)
            other.start()
            other.join(TIMEOUT)
        return listed(run_id)

    monkeypatch.setattr(second.runtime.store, "steps", steps_then_lose_the_race)

    second.refresh()

    assert not armed and errors == []
    assert second.get_run(dead.id).state is RunState.INTERRUPTED
    assert [entry.action for entry in second.audit(run_id=dead.id)] == ["run_interrupted"]
    lab.ledger.release()
    assert second.resume(dead.id).state is RunState.DONE
    assert lab.ledger.counts() == {"read_beam": 1}
