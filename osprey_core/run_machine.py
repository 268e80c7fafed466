"""The run state machine: every state a run can be in and every way it can move.

One Enum, one table. Side effects live in the orchestrator's ``on_enter_<state>``
callbacks; guards are named ``is_*`` / ``has_*``. Every state's first entry callback is
``persist``, so a state (and a pause with its approval request) is committed to the store
before its own callback announces anything.
"""

from __future__ import annotations

import enum
import functools
from typing import Any


class RunState(enum.StrEnum):
    RECEIVED = "received"
    CLASSIFYING = "classifying"
    PLANNING = "planning"
    AWAITING_PLAN_APPROVAL = "awaiting_plan_approval"
    EXECUTING = "executing"
    AWAITING_STEP_APPROVAL = "awaiting_step_approval"
    RESPONDING = "responding"
    DONE = "done"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


S = RunState
PAUSED = frozenset({S.AWAITING_PLAN_APPROVAL, S.AWAITING_STEP_APPROVAL})
TERMINAL = frozenset({S.DONE, S.CANCELLED, S.REJECTED, S.EXPIRED, S.FAILED})
#: States in which a process is working on the run; after a crash they become INTERRUPTED.
ACTIVE = frozenset({S.RECEIVED, S.CLASSIFYING, S.PLANNING, S.EXECUTING, S.RESPONDING})
OPEN = [state for state in S if state not in TERMINAL]

# trigger                   source                      destination              guards
TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "classify", "source": S.RECEIVED, "dest": S.CLASSIFYING},
    {"trigger": "plan", "source": S.CLASSIFYING, "dest": S.PLANNING},
    {"trigger": "submit_plan", "source": S.PLANNING, "dest": S.AWAITING_PLAN_APPROVAL,
     "conditions": "is_planning_mode"},
    {"trigger": "submit_plan", "source": S.PLANNING, "dest": S.EXECUTING,
     "unless": "is_planning_mode"},
    {"trigger": "approve", "source": S.AWAITING_PLAN_APPROVAL, "dest": S.EXECUTING},
    {"trigger": "pause_for_step", "source": S.EXECUTING, "dest": S.AWAITING_STEP_APPROVAL},
    {"trigger": "approve", "source": S.AWAITING_STEP_APPROVAL, "dest": S.EXECUTING},
    {"trigger": "respond", "source": S.EXECUTING, "dest": S.RESPONDING},
    {"trigger": "finish", "source": S.RESPONDING, "dest": S.DONE},
    {"trigger": "reject", "source": sorted(PAUSED), "dest": S.REJECTED},
    {"trigger": "expire", "source": sorted(PAUSED), "dest": S.EXPIRED},
    {"trigger": "interrupt", "source": sorted(ACTIVE), "dest": S.INTERRUPTED},
    {"trigger": "resume", "source": S.INTERRUPTED, "dest": S.EXECUTING, "conditions": "has_plan"},
    {"trigger": "resume", "source": S.INTERRUPTED, "dest": S.RECEIVED, "unless": "has_plan"},
    {"trigger": "cancel", "source": OPEN, "dest": S.CANCELLED},
    {"trigger": "fail", "source": OPEN, "dest": S.FAILED},
]


def new_machine() -> Any:
    """A machine with no runs yet: each run's controller joins it with ``add_model``
    (restoring with ``initial=`` runs no entry callback) and leaves with ``remove_model``.

    States are handed over as plain strings: given Enum members, ``transitions`` would
    look for callbacks named after the member (``on_enter_EXECUTING``).
    """
    return _machine_class()(
        model=None,
        states=[{"name": str(state), "on_enter": ["persist"]} for state in S],
        transitions=_plain_table(),
        initial=str(S.RECEIVED),
        auto_transitions=False,
        queued=True,
        send_event=False,
    )


def build_machine(model: Any, initial: RunState) -> Any:
    """A machine for one model, restored at ``initial``."""
    machine = new_machine()
    machine.add_model(model, initial=str(initial))
    return machine


@functools.cache
def _machine_class() -> type:
    """Made on first use, so importing this module does not import ``transitions``."""
    from transitions.extensions.asyncio import AsyncMachine

    class SequentialMachine(AsyncMachine):  # type: ignore[misc]
        """Runs a state's callbacks one after another: AsyncMachine gathers them
        concurrently, which would let a state announce a pause before ``persist``."""

        @staticmethod
        async def await_all(callables: list[Any]) -> list[Any]:
            return [await callback() for callback in callables]

    return SequentialMachine


@functools.cache
def _plain_table() -> tuple[dict[str, Any], ...]:
    def plain(value: Any) -> Any:
        return [str(item) for item in value] if isinstance(value, list) else str(value)

    return tuple({key: plain(value) if key in ("source", "dest") else value
                  for key, value in row.items()} for row in TRANSITIONS)


def mermaid_diagram() -> str:
    """The table as a mermaid state diagram (docs/run-states.md is checked against it)."""
    lines = ["stateDiagram-v2", f"    [*] --> {S.RECEIVED}"]
    for row in TRANSITIONS:
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        guard = row.get("conditions") or (f"not {row['unless']}" if "unless" in row else "")
        label = f"{row['trigger']} [{guard}]" if guard else row["trigger"]
        lines.extend(f"    {source} --> {row['dest']}: {label}" for source in sources)
    lines.extend(f"    {state} --> [*]" for state in sorted(TERMINAL))
    return "\n".join(lines) + "\n"
