"""Built-in plugin: the configured approval modes. Essential: it cannot be blocked.

``approval.mode`` (or a per-capability override) decides:

* ``disabled``: steps run without asking (writes still obey the control-system limits);
* ``control_writes``: side-effecting steps need a human;
* ``all_code``: side-effecting steps and steps that run generated code need a human.

In planning mode every plan needs a human; steps covered by the plan approval run, those
that the mode still flags ask again with their exact artifact.
"""

from __future__ import annotations

from typing import Any

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.approval_policies import ApprovalPolicy, Verdict, Vote


class ConfiguredModes(ApprovalPolicy):
    name = "approval_modes"
    description = "Applies approval.mode and planning mode from the configuration."

    def evaluate(self, action: Any) -> Verdict:
        if action.kind == "plan":
            if action.planning_mode:
                return Verdict(Vote.REQUIRE_APPROVAL, "planning mode: plans are reviewed first")
            return Verdict(Vote.ALLOW, "not in planning mode")
        mode = action.settings.mode_for(action.capability)
        if mode == "disabled":
            return Verdict(Vote.ALLOW, f"approval mode is disabled for '{action.capability}'")
        if action.side_effects:
            return Verdict(Vote.REQUIRE_APPROVAL,
                           f"'{action.capability}' has side effects (mode {mode})")
        if mode == "all_code" and action.runs_code:
            return Verdict(Vote.REQUIRE_APPROVAL,
                           f"'{action.capability}' runs generated code (mode all_code)")
        return Verdict(Vote.ALLOW, f"'{action.capability}' is read-only (mode {mode})")


@hookimpl
def register_approval_policies(register: Any) -> None:
    register(ConfiguredModes())
