"""An approval request for people: what it asks, why, and what a decision is bound to.

The terminal (``osprey approvals show``, ``osprey chat``) and the chat endpoint show the
same lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from osprey_core.display.text import when

if TYPE_CHECKING:
    from osprey_core.models import ApprovalRecord


def approval_lines(approval: ApprovalRecord) -> list[str]:
    """Header, summary, why it was asked, the sha256 and expiry, and any decision."""
    step = "" if approval.step_index is None else f", step {approval.step_index + 1}"
    lines = [f"approval {approval.id} ({approval.action}{step}, run {approval.run_id}, "
             f"session {approval.session}): {approval.status}",
             approval.summary]
    lines += [f"  why: {reason}" for reason in approval.reasons]
    lines.append(f"sha256 {approval.artifact_sha256}; expires {when(approval.expires_at)}")
    if approval.decided_by:
        at = f" at {when(approval.decided_at)}" if approval.decided_at else ""
        why = f": {approval.decision_reason}" if approval.decision_reason else ""
        lines.append(f"{approval.status} by {approval.decided_by} via "
                     f"{approval.decided_via or '?'}{at}{why}")
    return lines
