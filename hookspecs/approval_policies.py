"""Approval policies: every policy votes on every approval question."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from osprey_core.hookspecs import hookspec


class Vote(enum.StrEnum):
    """What a policy says about an action. A deny wins; no vote at all asks a human."""

    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"
    ABSTAIN = "abstain"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A policy's vote with the reason shown to the operator and written to the audit log."""

    vote: Vote
    reason: str


class ApprovalPolicy(ABC):
    """Decides whether an action may run, must be refused, or needs a human."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def evaluate(self, action: Any) -> Verdict:
        """Vote on ``action`` (a plan, code, a channel write, a memory save, ...)."""


@hookspec
def register_approval_policies(register: Callable[[ApprovalPolicy], None]) -> None:
    """Register approval-policy instances by calling ``register(policy)`` for each."""
