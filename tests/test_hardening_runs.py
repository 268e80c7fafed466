"""Runs under attack and fault: recovery never takes over a live run, approvals lapse
after a crash, refusals are audited, plans are bounded and steps cost the same
(hardening issue, items 2, 3, 4 and 14)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.orchestration import Lab, ManualClock, plan_reply, step
from support.postgres import StoreEngine, lab_on

from osprey_core.errors import ApprovalError
from osprey_core.models import ApprovalStatus, Plan, PlanStep, RunRecord, StepRecord, StepStatus
from osprey_core.orchestration.controller import RunController
from osprey_core.orchestration.runtime import boot_id, own_start
from osprey_core.planning import PlanValidationError
from osprey_core.run_machine import RunState
from osprey_core.testing.openai_server import FakeOpenAIServer


@pytest.fixture
def lab(lab: Lab, run_store_engine: StoreEngine) -> Iterator[Lab]:
    """The offline lab, with its runs in each store engine in turn."""
    yield from lab_on(lab, run_store_engine)


def executing_run(owner_pid: int, owner_boot: str, owner_start: int | None) -> RunRecord:
    """A run in the middle of a side-effecting step, held by the given process."""
    now = datetime.now(UTC)
    plan = Plan(steps=[PlanStep(capability="slow_write", output="ramp"),
                       PlanStep(capability="respond", inputs=["ramp"], output="answer")])
    return RunRecord(id="run-held", session="s", user="alice", query="slow ramp",
                     state=RunState.EXECUTING, plan=plan, plan_sha256=plan.sha256(),
                     context={"query": "slow ramp"}, owner_pid=owner_pid,
                     owner_boot=owner_boot, owner_start=owner_start, created_at=now,
                     updated_at=now)


def running_step(run: RunRecord) -> StepRecord:
    return StepRecord(run_id=run.id, index=0, capability="slow_write",
                      status=StepStatus.RUNNING, side_effects=True,
                      idempotency_key=f"{run.id}:0")


def insert(osprey: Any, run: RunRecord) -> None:
    with osprey.runtime.store.transaction() as tx:
        tx.insert_run(run)
        tx.save_step(running_step(run))


# -- item 2: recovery acts only on a dead owner, checked in the same transaction --------


def test_recovery_on_a_stale_read_never_takes_over_a_run_a_live_process_now_holds(
    lab: Lab, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's owner died; before this recovery pass acts on what it read, another
    worker recovered and resumed it. The stale pass must lose, not interrupt it."""
    recoverer, worker = lab.osprey(), lab.osprey()
    dead = executing_run(os.getpid(), "a-boot-before-the-crash", 1)
    insert(worker, dead)
    stale = [worker.runtime.store.get_run(dead.id)]
    # The other worker now holds it: same state, a live owner (this very process).
    taken = dead.model_copy(update={"owner_boot": boot_id(), "owner_start": own_start()})
    with worker.runtime.store.transaction() as tx:
        tx.update_run(taken)
    monkeypatch.setattr(recoverer.runtime.store, "list_runs", lambda **_: stale)

    recoverer.refresh()

    held = worker.get_run(dead.id)
    assert (held.state, held.owner_boot) == (RunState.EXECUTING, boot_id())
    assert [record.status for record in worker.runtime.store.steps(dead.id)] == [
        StepStatus.RUNNING]
    assert "run_interrupted" not in [entry.action for entry in worker.audit(run_id=dead.id)]
    # Losing the run is not abandoning it: this process's later passes leave it alone too.
    assert dead.id not in recoverer.runtime.abandoned
    monkeypatch.undo()
    recoverer.refresh()
    assert worker.get_run(dead.id).state is RunState.EXECUTING


def test_a_reused_pid_is_not_the_owner_and_its_run_is_recovered(lab: Lab) -> None:
    osprey = lab.osprey()
    # Our pid and boot, but a different start time: the owner was an earlier process.
    start = own_start()
    assert start is not None
    insert(osprey, executing_run(os.getpid(), boot_id(), start + 1))
    osprey.refresh()
    assert osprey.get_run("run-held").state is RunState.INTERRUPTED
    assert [record.status for record in osprey.runtime.store.steps("run-held")] == [
        StepStatus.INDETERMINATE]


def test_a_live_owner_keeps_its_run(lab: Lab) -> None:
    osprey = lab.osprey()
    insert(osprey, executing_run(os.getpid(), boot_id(), own_start()))
    osprey.refresh()
    assert osprey.get_run("run-held").state is RunState.EXECUTING


def test_a_process_whose_run_was_taken_over_cannot_write_it_any_more(lab: Lab) -> None:
    first, second = lab.osprey(), lab.osprey()
    mine = executing_run(os.getpid(), boot_id(), own_start())
    insert(first, mine)
    with RunController(first.runtime, first.get_run(mine.id)) as controller:
        # Meanwhile another process took it over (recovered and resumed it).
        other = mine.model_copy(update={"owner_pid": 1, "owner_start": 99})
        with second.runtime.store.transaction() as tx:
            tx.update_run(other)
        with pytest.raises(Exception, match="held by another process"):
            controller.save("step_succeeded", {"step": 1})
    assert first.get_run(mine.id).owner_pid == 1


# -- item 3: an approved side effect starts within the approval's validity -------------


class Crash(BaseException):
    """The process dies between the approval and the side effect."""


def crash_after_approval(lab: Lab, clock: ManualClock, monkeypatch: pytest.MonkeyPatch,
                         ) -> tuple[str, str]:
    osprey = lab.osprey(clock=clock)
    run = osprey.run("set the magnet to 2")
    assert run.state is RunState.AWAITING_STEP_APPROVAL

    async def die(*args: Any, **kwargs: Any) -> Any:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(RunController, "_run_step", die)
        with pytest.raises(Crash):
            osprey.approve(run.approval_id or "", user="bob")
    # The dead process's run: executing, approved, nothing started.
    lab.orphan_runs()
    assert lab.ledger.count("set_magnet") == 0
    return run.id, run.approval_id or ""


def test_a_side_effect_resumed_after_its_approval_lapsed_asks_again(
    lab: Lab, monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock()
    run_id, approval_id = crash_after_approval(lab, clock, monkeypatch)
    clock.advance(2 * 3600)  # well past the request's expiry (1 h) and the window (60 s)

    later = lab.osprey(clock=clock)
    later.refresh()
    resumed = later.resume(run_id)

    assert resumed.state is RunState.AWAITING_STEP_APPROVAL
    assert resumed.approval_id not in (None, approval_id)
    fresh = later.approval(resumed.approval_id or "")
    old = later.approval(approval_id)
    assert fresh.artifact == old.artifact and fresh.status is ApprovalStatus.PENDING
    assert lab.ledger.count("set_magnet") == 0
    actions = [entry.action for entry in later.audit(run_id=run_id)]
    assert "approval_lapsed" in actions
    assert later.approve(fresh.id, user="carol").state is RunState.DONE
    assert lab.ledger.count("set_magnet") == 1


def test_a_side_effect_resumed_within_its_window_runs_on_the_approval(
    lab: Lab, monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock()
    run_id, _ = crash_after_approval(lab, clock, monkeypatch)
    clock.advance(30)

    later = lab.osprey(clock=clock)
    later.refresh()
    assert later.resume(run_id).state is RunState.DONE
    assert lab.ledger.count("set_magnet") == 1


# -- item 4: refused decisions are audited ----------------------------------------------


def test_unknown_and_absurd_approval_ids_are_refused_briefly_and_audited(lab: Lab) -> None:
    osprey = lab.osprey()
    huge = "apv-" + "x" * 1_000_000
    for approval_id in ("apv-nothere", huge):
        with pytest.raises(ApprovalError) as refused:
            osprey.approve(approval_id, user="mallory")
        assert len(str(refused.value)) < 200
        with pytest.raises(ApprovalError):
            osprey.edit(approval_id, {"steps": []}, user="mallory")
    entries = [entry for entry in osprey.audit() if entry.action == "approval_refused"]
    assert [(entry.actor, entry.details["attempted"]) for entry in entries] == [
        ("mallory", "approve"), ("mallory", "edit")] * 2
    assert entries[0].approval_id == "apv-nothere"
    assert all(len(entry.approval_id or "") <= 80 for entry in entries)
    assert all(entry.run_id is None for entry in entries)


def test_a_decision_refused_because_it_came_too_late_is_audited(lab: Lab) -> None:
    clock = ManualClock()
    osprey = lab.osprey(clock=clock)
    run = osprey.run("set the magnet to 2")
    clock.advance(2 * 3600)
    with pytest.raises(ApprovalError, match="expired"):
        osprey.approve(run.approval_id or "", user="bob")
    actions = [(entry.action, entry.actor) for entry in osprey.audit(run_id=run.id)]
    assert actions[-2:] == [("approval_expired", "system"), ("approval_refused", "bob")]


# -- item 14: plans are bounded, and a step costs the same however long the run is -----


@pytest.mark.parametrize("steps", [51, 10_000])
def test_a_models_overlong_plan_is_refused_and_fed_back(tmp_path: Path, steps: int) -> None:
    with FakeOpenAIServer() as server:
        lab = Lab(tmp_path, llm_url=server.base_url)
        try:
            huge = plan_reply(*[step("read_beam", f"beam_{index}") for index in range(steps)])
            server.script(huge, huge, huge)
            run = lab.osprey().run("read the beam current")
        finally:
            lab.close()
    assert run.state is RunState.FAILED
    assert "at most 50" in (run.error or "") and "planning.max_steps" in (run.error or "")
    assert lab.ledger.count("read_beam") == 0
    # The feedback told the model why, without echoing megabytes back.
    second = server.requests[1]["messages"]
    assert "planning.max_steps" in second[-1]["content"]
    assert sum(len(message["content"]) for message in second) < 2 * 262_144 + 20_000


def test_given_and_edited_plans_are_bounded_too(lab: Lab) -> None:
    lab.environ["OSPREY__PLANNING__MAX_STEPS"] = "5"
    osprey = lab.osprey()
    long = Plan(steps=[PlanStep(capability="read_beam", output=f"beam_{index}")
                       for index in range(6)])
    with pytest.raises(PlanValidationError, match="6 steps; at most 5"):
        osprey.run("read the beam current", plan=long)
    paused = osprey.run("/planning set the magnet to 2")
    with pytest.raises(PlanValidationError, match="at most 5"):
        osprey.edit(paused.approval_id or "", long.model_dump(mode="json"), user="bob")
    assert osprey.approval(paused.approval_id or "").status is ApprovalStatus.PENDING


def test_a_huge_plan_in_bytes_is_refused(lab: Lab) -> None:
    osprey = lab.osprey()
    fat = Plan(steps=[PlanStep(capability="read_beam", output="beam",
                               description="x" * 300_000)])
    with pytest.raises(PlanValidationError, match=r"planning\.max_plan_bytes"):
        osprey.run("read the beam current", plan=fat)


def row_size(lab: Lab, run_id: str) -> int:
    """The size of the run's own row, as text, in whichever engine holds it."""
    from support.postgres import open_store_of

    store = open_store_of(lab.environ, lab.home)
    try:
        [size] = store.conn.execute("SELECT length(CAST(data AS TEXT)) FROM runs WHERE id=?",
                                    [run_id]).fetchone()
    finally:
        store.close()
    return int(size)


@pytest.mark.parametrize("steps", [2, 40])
def test_the_run_record_does_not_grow_with_the_steps_it_has_run(lab: Lab, steps: int) -> None:
    lab.environ["OSPREY__PLANNING__MAX_STEPS"] = "100"
    osprey = lab.osprey()
    plan = Plan(steps=[*[PlanStep(capability="status_report", output=f"report_{index}")
                         for index in range(steps)],
                       PlanStep(capability="respond", output="answer")])
    run = osprey.run("status report", plan=plan)
    assert run.state is RunState.DONE, run.error
    # Every step's output is kept (in the run's context), but not in the run's own row.
    stored = osprey.get_run(run.id)
    assert len([key for key in stored.context if key.startswith("report_")]) == steps
    assert stored.plan == run.plan
    size = row_size(lab, run.id) - len(run.response or "") - len(json.dumps(run.candidates))
    assert size < 1500


def test_a_store_written_before_the_split_is_migrated_with_nothing_lost(tmp_path: Path) -> None:
    import sqlite3

    from osprey_core.store import RunStore
    from osprey_core.store_schema import SCHEMA_V1

    path = tmp_path / "osprey.db"
    legacy = executing_run(123, "boot", None).model_copy(
        update={"state": RunState.DONE, "context": {"query": "q", "ramp": {"ok": True}},
                "response": "done"})
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for statement in SCHEMA_V1:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                 [legacy.id, legacy.session, legacy.state, legacy.created_at.isoformat(),
                  legacy.updated_at.isoformat(), legacy.model_dump_json(exclude={"owner_start"})])
    conn.close()

    store = RunStore(path)
    try:
        assert store.schema_version == 3
        assert store.get_run(legacy.id) == legacy
    finally:
        store.close()
