"""Approval policies and the approval lifecycle: voting, modes, tightening and expiry; the
lifecycle tests (those with a lab) run on both store engines."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from support.orchestration import Lab, ManualClock, PolicyPlugin, VotePolicy
from support.postgres import StoreEngine, lab_on

from osprey_core.approvals import Action, Outcome, rule
from osprey_core.errors import ApprovalError
from osprey_core.hookspecs.approval_policies import ApprovalPolicy, Verdict, Vote
from osprey_core.models import ApprovalStatus
from osprey_core.orchestration.orchestrator import Orchestrator
from osprey_core.plugin_host import load_plugins
from osprey_core.plugins.approval_modes import ConfiguredModes
from osprey_core.registry import Registry
from osprey_core.run_machine import TERMINAL, RunState
from osprey_core.settings import ApprovalSettings
from osprey_core.testing.fakes import FakeApprovalPolicy

uses_policies = pytest.mark.exercises_hook("register_approval_policies")


@pytest.fixture
def lab(lab: Lab, run_store_engine: StoreEngine) -> Iterator[Lab]:
    """The offline lab, with its runs in each store engine in turn."""
    yield from lab_on(lab, run_store_engine)


def action(kind: str = "step", *, capability: str | None = "set_magnet",
           side_effects: bool = False, runs_code: bool = False, planning_mode: bool = False,
           settings: ApprovalSettings | None = None) -> Action:
    return Action(kind=kind, run_id="run-1", session="s", user="alice",
                  planning_mode=planning_mode, settings=settings or ApprovalSettings(),
                  artifact={"capability": capability}, capability=capability,
                  side_effects=side_effects, runs_code=runs_code)


def policies(*items: ApprovalPolicy) -> Registry[ApprovalPolicy]:
    found: Registry[ApprovalPolicy] = Registry("approval policy", ApprovalPolicy, "instance")
    for item in items:
        found.add(item, plugin="tests")
    return found


def voter(name: str, vote: Vote) -> FakeApprovalPolicy:
    return FakeApprovalPolicy(name, verdict=Verdict(vote, f"{name} says {vote}"))


# -- the voting rule --------------------------------------------------------------------


@pytest.mark.parametrize(("votes", "outcome"), [
    ((), Outcome.ASK),
    ((Vote.ABSTAIN, Vote.ABSTAIN), Outcome.ASK),
    ((Vote.ALLOW,), Outcome.ALLOW),
    ((Vote.ALLOW, Vote.ABSTAIN), Outcome.ALLOW),
    ((Vote.ALLOW, Vote.REQUIRE_APPROVAL), Outcome.ASK),
    ((Vote.ALLOW, Vote.ALLOW, Vote.DENY), Outcome.DENY),
    ((Vote.REQUIRE_APPROVAL, Vote.DENY), Outcome.DENY),
], ids=["no-policies", "all-abstain", "allow", "allow+abstain", "allow+ask", "deny-wins",
        "deny-beats-ask"])
def test_every_policy_votes_a_deny_wins_and_silence_asks(votes: tuple[Vote, ...],
                                                         outcome: Outcome) -> None:
    voters = [voter(f"p{number}", vote) for number, vote in enumerate(votes)]

    ruling = rule(policies(*voters), action())

    assert ruling.outcome is outcome
    assert all(len(item.actions) == 1 for item in voters)  # nobody was skipped
    assert ruling.reasons == [f"p{number}: {vote}: p{number} says {vote}"
                              for number, vote in enumerate(votes) if vote is not Vote.ABSTAIN]


class Raises(ApprovalPolicy):
    name = "raises"

    def evaluate(self, action: Any) -> Verdict:
        raise RuntimeError("limits database unreachable")


class Garbled(ApprovalPolicy):
    name = "garbled"

    def evaluate(self, action: Any) -> Any:
        return "allow"


@pytest.mark.parametrize(("policy", "reason"), [
    (Raises(), "policy failed (RuntimeError: limits database unreachable)"),
    (Garbled(), "policy failed (TypeError: returned 'allow', not a Verdict)"),
], ids=["raises", "not-a-verdict"])
def test_a_policy_that_fails_counts_as_deny(policy: ApprovalPolicy, reason: str) -> None:
    ruling = rule(policies(voter("ok", Vote.ALLOW), policy), action())

    assert ruling.outcome is Outcome.DENY
    assert f"{policy.name}: deny: {reason}" in ruling.reasons


# -- the built-in approval modes --------------------------------------------------------


@pytest.mark.parametrize(("mode", "side_effects", "runs_code", "vote"), [
    ("disabled", True, True, Vote.ALLOW),
    ("control_writes", True, False, Vote.REQUIRE_APPROVAL),
    ("control_writes", False, True, Vote.ALLOW),
    ("control_writes", False, False, Vote.ALLOW),
    ("all_code", True, False, Vote.REQUIRE_APPROVAL),
    ("all_code", False, True, Vote.REQUIRE_APPROVAL),
    ("all_code", False, False, Vote.ALLOW),
])
def test_approval_modes_vote_by_side_effects_and_generated_code(
    mode: str, side_effects: bool, runs_code: bool, vote: Vote,
) -> None:
    settings = ApprovalSettings(mode=mode)  # type: ignore[arg-type]
    verdict = ConfiguredModes().evaluate(action(side_effects=side_effects, runs_code=runs_code,
                                                settings=settings))
    assert verdict.vote is vote


def test_per_capability_mode_overrides_the_default_both_ways() -> None:
    settings = ApprovalSettings(mode="control_writes",
                                capabilities={"set_magnet": "disabled", "python": "all_code"})
    modes = ConfiguredModes()

    assert modes.evaluate(action(capability="set_magnet", side_effects=True,
                                 settings=settings)).vote is Vote.ALLOW
    assert modes.evaluate(action(capability="set_corrector", side_effects=True,
                                 settings=settings)).vote is Vote.REQUIRE_APPROVAL
    assert modes.evaluate(action(capability="python", runs_code=True,
                                 settings=settings)).vote is Vote.REQUIRE_APPROVAL
    assert modes.evaluate(action(capability="other_code", runs_code=True,
                                 settings=settings)).vote is Vote.ALLOW


def test_plans_need_a_human_only_in_planning_mode() -> None:
    modes = ConfiguredModes()
    assert modes.evaluate(action("plan", capability=None,
                                 planning_mode=True)).vote is Vote.REQUIRE_APPROVAL
    assert modes.evaluate(action("plan", capability=None)).vote is Vote.ALLOW


def test_approval_modes_is_essential_and_cannot_be_blocked() -> None:
    host = load_plugins(environ={"OSPREY_DISABLE_PLUGINS": "approval_modes",
                                 "OSPREY_LOAD_PLUGINS": ""})
    assert "approval_modes" in host.approval_policies().names()


@pytest.mark.parametrize(("approval", "asks"), [
    ({"mode": "disabled"}, set()),
    ({"mode": "control_writes"}, {"set_magnet"}),
    ({"mode": "all_code"}, {"set_magnet", "run_script"}),
    ({"mode": "all_code", "capabilities": {"run_script": "control_writes"}}, {"set_magnet"}),
    ({"mode": "control_writes", "capabilities": {"set_magnet": "disabled"}}, set()),
], ids=["disabled", "control_writes", "all_code", "override-looser", "override-disabled"])
def test_configured_mode_decides_which_steps_pause(lab: Lab, approval: dict[str, Any],
                                                    asks: set[str]) -> None:
    lab.configure(approval=approval)
    osprey = lab.osprey()

    run = osprey.run("analyse with code, then set the magnet to 2")
    asked: set[str] = set()
    while run.state is RunState.AWAITING_STEP_APPROVAL:
        approval_record = osprey.approval(run.approval_id or "")
        assert run.plan is not None
        asked.add(run.plan.steps[approval_record.step_index or 0].capability)
        run = osprey.approve(approval_record.id)

    assert run.state is RunState.DONE
    assert asked == asks
    assert lab.ledger.counts() == {"run_script": 1, "set_magnet": 1}


# -- policies from plugins, end to end --------------------------------------------------


@uses_policies
def test_policy_plugin_denying_a_step_fails_the_run_before_anything_runs(lab: Lab) -> None:
    lockout = VotePolicy(Vote.DENY, applies=lambda act: act.capability == "set_magnet",
                         reason="magnet interlock active")
    osprey = lab.osprey((PolicyPlugin(lockout), "lockout"))

    run = osprey.run("set the magnet to 2")

    assert run.state is RunState.FAILED
    assert "step 1 (set_magnet) refused by policy" in (run.error or "")
    assert "test_vote: deny: magnet interlock active" in (run.error or "")
    assert osprey.approvals() == []
    assert lab.ledger.counts() == {}


@uses_policies
def test_policy_plugin_that_raises_fails_closed_even_for_read_only_steps(lab: Lab) -> None:
    osprey = lab.osprey((PolicyPlugin(Raises()), "raises"))

    run = osprey.run("what is the beam current?")

    assert run.state is RunState.FAILED
    assert "policy failed (RuntimeError: limits database unreachable)" in (run.error or "")
    assert lab.ledger.counts() == {}


@uses_policies
@pytest.mark.parametrize("planning", [True, False], ids=["plan-approval", "step-approval"])
def test_policy_tightened_while_paused_fails_closed_on_approve(lab: Lab, planning: bool) -> None:
    run = lab.osprey().run("/planning what is the beam current?" if planning
                           else "set the magnet to 2")
    assert run.state in (RunState.AWAITING_PLAN_APPROVAL, RunState.AWAITING_STEP_APPROVAL)
    # Restart with a policy installed that now forbids exactly what waits for approval
    # (a plan, or a step) and nothing else.
    waiting = "plan" if planning else "step"
    freeze = VotePolicy(Vote.DENY, applies=lambda act: act.kind == waiting,
                        reason="machine is in access mode")
    osprey = lab.osprey((PolicyPlugin(freeze), "freeze"))

    result = osprey.approve(run.approval_id or "", user="bob")

    assert result.state is RunState.FAILED
    assert "refused by policy" in (result.error or "")
    assert "machine is in access mode" in (result.error or "")
    assert lab.ledger.counts() == {}
    assert osprey.pending() == []
    # The human's yes is recorded as refused, never as an approval.
    assert osprey.approval(run.approval_id or "").status is ApprovalStatus.WITHDRAWN
    trail = [(entry.action, entry.actor) for entry in osprey.audit(run_id=run.id)]
    assert trail[-3:] == [("approval_refused", "bob"), ("approval_withdrawn", "system"),
                          ("run_failed", "system")]


@uses_policies
def test_edit_into_a_plan_a_policy_denies_is_refused_and_the_request_stays(lab: Lab) -> None:
    no_magnet = VotePolicy(
        Vote.DENY, reason="no magnet changes today",
        applies=lambda act: act.kind == "plan" and any(
            item["capability"] == "set_magnet" for item in act.artifact["steps"]))
    osprey = lab.osprey((PolicyPlugin(no_magnet), "no_magnet"))
    run = osprey.run("/planning what is the beam current?")
    before = osprey.approvals()

    with pytest.raises(ApprovalError, match=r"the edited plan is refused by policy: .*"
                       "test_vote: deny: no magnet changes today"):
        osprey.edit(run.approval_id or "", {"steps": [
            {"capability": "set_magnet", "parameters": {"value": 9.0}, "output": "magnet"}]})

    assert osprey.approvals() == before
    assert osprey.get_run(run.id) == run
    assert osprey.approve(run.approval_id or "").state is RunState.DONE
    assert lab.ledger.counts() == {"read_beam": 1}


def test_mode_tightened_while_a_plan_waits_applies_when_it_is_approved(lab: Lab) -> None:
    lab.configure(approval={"mode": "disabled"})
    run = lab.osprey().run("/planning set the magnet to 2")
    assert "asks again" not in lab.osprey().approval(run.approval_id or "").summary
    lab.configure(approval={"mode": "control_writes"})

    paused = lab.osprey().approve(run.approval_id or "")

    assert paused.state is RunState.AWAITING_STEP_APPROVAL
    assert lab.ledger.counts() == {}


# -- expiry -----------------------------------------------------------------------------


def test_unanswered_request_expires_counts_as_rejected_and_is_audited(lab: Lab) -> None:
    lab.configure(approval={"expiry_seconds": 60})
    clock = ManualClock()
    osprey = lab.osprey(clock=clock)
    run = osprey.run("set the magnet to 2")
    approval = osprey.approval(run.approval_id or "")
    assert approval.expires_at == clock.now + timedelta(seconds=60)

    clock.advance(59)
    assert [record.id for record in osprey.pending()] == [approval.id]
    clock.advance(1)
    with pytest.raises(ApprovalError, match=f"approval {approval.id} expired at .*counts as "
                       "rejected"):
        osprey.approve(approval.id, user="bob")

    expired = osprey.get_run(run.id)
    assert expired.state is RunState.EXPIRED and expired.state in TERMINAL
    assert expired.error == f"approval {approval.id} expired unanswered"
    record = osprey.approval(approval.id)
    assert (record.status, record.decided_by, record.decided_via, record.decided_at) == (
        ApprovalStatus.EXPIRED, "system", "clock", clock.now)
    [entry] = [entry for entry in osprey.audit(run_id=run.id)
               if entry.action == "approval_expired"]
    assert (entry.approval_id, entry.sha256, entry.at) == (approval.id,
                                                           approval.artifact_sha256, clock.now)
    assert lab.ledger.counts() == {}


@pytest.mark.parametrize("act", ["approve", "reject", "edit"])
def test_orchestrator_refuses_an_overdue_decision_or_edit_itself(lab: Lab, act: str) -> None:
    """Even without the API's pre-check, acting past the deadline is an expiry: an edit
    must not renew the request's deadline either."""
    clock = ManualClock()
    osprey = lab.osprey(clock=clock)
    run = osprey.run("/planning set the magnet to 2")
    clock.advance(3600)
    orchestrator = Orchestrator(osprey.runtime)
    approval_id = run.approval_id or ""
    if act == "edit":
        call = orchestrator.edit(approval_id, {"steps": [
            {"capability": "read_beam", "output": "beam"}]}, actor="bob", interface="api")
    else:
        call = orchestrator.decide(approval_id, approve=act == "approve", actor="bob",
                                   interface="api")

    with pytest.raises(ApprovalError, match=rf"approval {approval_id} expired at "
                       r".*; it counts as rejected"):
        asyncio.run(call)

    assert osprey.get_run(run.id).state is RunState.EXPIRED
    assert [approval.status for approval in osprey.approvals()] == [ApprovalStatus.EXPIRED]
    assert lab.ledger.counts() == {}


@pytest.mark.parametrize("check", ["pending", "refresh"])
def test_expiry_is_applied_after_a_restart_with_a_later_clock(lab: Lab, check: str) -> None:
    clock = ManualClock()
    run = lab.osprey(clock=clock).run("set the magnet to 2")
    later = ManualClock(clock.now + timedelta(hours=2))
    restarted = lab.osprey(clock=later)
    assert restarted.get_run(run.id).state is RunState.AWAITING_STEP_APPROVAL

    if check == "pending":
        assert restarted.pending() == []
    else:
        restarted.refresh()

    assert restarted.get_run(run.id).state is RunState.EXPIRED
    [entry] = [entry for entry in restarted.audit(run_id=run.id)
               if entry.action == "approval_expired"]
    assert (entry.actor, entry.interface, entry.at) == ("system", "clock", later.now)
    with pytest.raises(ApprovalError, match="already expired"):
        lab.osprey(clock=clock).approve(run.approval_id or "")
    assert lab.ledger.counts() == {}


def test_expiry_sweep_losing_a_race_to_a_decision_elsewhere_is_not_an_error(
    lab: Lab, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Listing approvals expires overdue ones; if another console decided one between the
    sweep's read and its write, the sweep must step aside, not fail the listing."""
    clock = ManualClock()
    console = lab.osprey(clock=clock)
    run = console.run("set the magnet to 2")
    sweeper = lab.osprey(clock=ManualClock(clock.now + timedelta(hours=2)))
    read, armed, errors = sweeper.runtime.store.get_run, [True], []

    def approve_elsewhere() -> None:
        try:
            console.approve(run.approval_id or "", user="bob")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read_then_lose_the_race(run_id: str) -> Any:
        record = read(run_id)
        if armed:
            armed.clear()
            other = threading.Thread(target=approve_elsewhere)
            other.start()
            other.join(30)
        return record

    monkeypatch.setattr(sweeper.runtime.store, "get_run", read_then_lose_the_race)

    assert sweeper.pending() == []

    assert not armed and errors == []
    record = sweeper.approval(run.approval_id or "")
    assert (record.status, record.decided_by) == (ApprovalStatus.APPROVED, "bob")
    assert sweeper.get_run(run.id).state is RunState.DONE
    assert "approval_expired" not in [entry.action for entry in sweeper.audit(run_id=run.id)]
    assert lab.ledger.counts() == {"set_magnet": 1}
