"""The approval engine: every policy votes, a deny wins, and silence asks a human.

A policy that raises or returns something other than a :class:`Verdict` counts as a deny:
the engine fails closed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from osprey_core.hookspecs.approval_policies import ApprovalPolicy, Verdict, Vote
from osprey_core.registry import Registry
from osprey_core.settings import ApprovalSettings


@dataclass(frozen=True, slots=True)
class Action:
    """What the policies vote on: a plan, or one step about to run."""

    kind: str  # "plan" or "step"
    run_id: str
    session: str
    user: str
    planning_mode: bool
    settings: ApprovalSettings
    artifact: dict[str, Any]
    capability: str | None = None
    side_effects: bool = False
    runs_code: bool = False
    approval_kind: str = "step"


class Outcome(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ASK = "ask"


@dataclass(frozen=True, slots=True)
class Ruling:
    outcome: Outcome
    votes: list[tuple[str, Verdict]] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [f"{policy}: {verdict.vote}: {verdict.reason}" for policy, verdict in self.votes
                if verdict.vote is not Vote.ABSTAIN]


def rule(policies: Registry[ApprovalPolicy], action: Action) -> Ruling:
    """Ask every policy about ``action`` and combine the votes."""
    votes: list[tuple[str, Verdict]] = []
    for entry in policies.entries():
        try:
            verdict = entry.item.evaluate(action)
            if not isinstance(verdict, Verdict) or not isinstance(verdict.vote, Vote):
                raise TypeError(f"returned {verdict!r}, not a Verdict")
        except Exception as exc:
            verdict = Verdict(Vote.DENY, f"policy failed ({type(exc).__name__}: {exc})")
        votes.append((entry.name, verdict))
    cast = {verdict.vote for _, verdict in votes}
    if Vote.DENY in cast:
        outcome = Outcome.DENY
    elif Vote.REQUIRE_APPROVAL in cast or Vote.ALLOW not in cast:
        outcome = Outcome.ASK
    else:
        outcome = Outcome.ALLOW
    return Ruling(outcome, votes)
