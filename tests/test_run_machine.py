"""The run state machine's table: its shape, its guards, persistence order, and its docs."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from transitions import MachineError

from osprey_core.run_machine import (
    ACTIVE,
    OPEN,
    PAUSED,
    TERMINAL,
    TRANSITIONS,
    RunState,
    build_machine,
    mermaid_diagram,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "run-states.md"


def edges() -> dict[RunState, set[RunState]]:
    graph: dict[RunState, set[RunState]] = defaultdict(set)
    for row in TRANSITIONS:
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        for source in sources:
            graph[RunState(source)].add(RunState(row["dest"]))
    return graph


def reachable(start: RunState) -> set[RunState]:
    graph, seen, todo = edges(), {start}, [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


class Model:
    """A bare machine model recording which callbacks ran, in order."""

    def __init__(self, *, planning: bool = False, with_plan: bool = False) -> None:
        self.planning = planning
        self.with_plan = with_plan
        self.calls: list[str] = []
        self.state: str

    def is_planning_mode(self) -> bool:
        return self.planning

    def has_plan(self) -> bool:
        return self.with_plan

    async def persist(self) -> None:
        self.calls.append(f"persist:{self.state}")


def _entry_callback(name: str) -> Any:
    async def entered(self: Model) -> None:
        self.calls.append(name)

    return entered


for _state in RunState:
    setattr(Model, f"on_enter_{_state}", _entry_callback(f"on_enter_{_state}"))


def fire(model: Model, trigger: str) -> None:
    asyncio.run(getattr(model, trigger)())


# -- the table --------------------------------------------------------------------------


def test_state_groups_partition_the_states() -> None:
    assert PAUSED | ACTIVE | TERMINAL | {RunState.INTERRUPTED} == set(RunState)
    assert not (PAUSED & ACTIVE or PAUSED & TERMINAL or ACTIVE & TERMINAL)
    assert set(OPEN) == set(RunState) - TERMINAL


def test_nothing_leaves_a_terminal_state() -> None:
    assert not set(edges()) & TERMINAL


def test_every_state_is_reachable_and_every_open_state_can_end() -> None:
    assert reachable(RunState.RECEIVED) == set(RunState)
    for state in OPEN:
        assert reachable(state) & TERMINAL, f"{state} can never end"


def test_only_a_human_or_the_clock_leaves_a_pause() -> None:
    """A pause is left by a decision, expiry, cancel or fail: never by running on."""
    triggers = {row["trigger"] for row in TRANSITIONS
                if set(row["source"] if isinstance(row["source"], list) else [row["source"]])
                & PAUSED}
    assert triggers == {"approve", "reject", "expire", "cancel", "fail"}
    rejected = [row for row in TRANSITIONS if row["trigger"] == "reject"]
    assert [row["dest"] for row in rejected] == [RunState.REJECTED]


def test_guards_are_named_is_or_has() -> None:
    guards = [row.get("conditions") or row.get("unless") for row in TRANSITIONS]
    named = [guard for guard in guards if guard]
    assert named and all(re.fullmatch(r"(is|has)_\w+", guard) for guard in named)


# -- the machine built from it ------------------------------------------------------------


@pytest.mark.parametrize(("planning", "dest"), [(True, "awaiting_plan_approval"),
                                                 (False, "executing")])
def test_a_plan_waits_for_a_human_only_in_planning_mode(planning: bool, dest: str) -> None:
    model = Model(planning=planning)
    build_machine(model, initial=RunState.PLANNING)

    fire(model, "submit_plan")

    assert model.state == dest
    assert model.calls == [f"persist:{dest}", f"on_enter_{dest}"]


@pytest.mark.parametrize(("plan", "dest"), [(True, "executing"), (False, "received")])
def test_resume_continues_a_plan_or_starts_over_without_one(plan: bool, dest: str) -> None:
    model = Model(with_plan=plan)
    build_machine(model, initial=RunState.INTERRUPTED)

    fire(model, "resume")

    assert model.state == dest


def test_restoring_a_state_runs_no_callback() -> None:
    model = Model()
    build_machine(model, initial=RunState.AWAITING_STEP_APPROVAL)

    assert model.state == "awaiting_step_approval"
    assert model.calls == []


def test_persist_runs_before_each_states_own_callback() -> None:
    model = Model()
    build_machine(model, initial=RunState.AWAITING_STEP_APPROVAL)

    fire(model, "approve")
    fire(model, "respond")

    assert model.calls == ["persist:executing", "on_enter_executing",
                           "persist:responding", "on_enter_responding"]


@pytest.mark.parametrize(("initial", "trigger"), [
    (RunState.DONE, "approve"),
    (RunState.REJECTED, "resume"),
    (RunState.EXECUTING, "approve"),
    (RunState.RECEIVED, "finish"),
    (RunState.CANCELLED, "cancel"),
])
def test_moves_outside_the_table_are_refused(initial: RunState, trigger: str) -> None:
    model = Model()
    build_machine(model, initial=initial)

    with pytest.raises(MachineError, match=f"Can't trigger event {trigger} from state"):
        fire(model, trigger)

    assert model.state == str(initial)
    assert model.calls == []


def test_no_automatic_to_state_triggers_exist() -> None:
    model = Model()
    build_machine(model, initial=RunState.AWAITING_PLAN_APPROVAL)
    assert not any(name.startswith("to_") for name in dir(type(model)) + list(vars(model)))
    with pytest.raises(AttributeError):
        model.to_done  # noqa: B018


# -- the documentation --------------------------------------------------------------------


def test_run_states_doc_shows_exactly_the_generated_diagram() -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^```mermaid\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)

    assert blocks == [mermaid_diagram()]


def test_run_states_doc_explains_every_state() -> None:
    text = DOC.read_text(encoding="utf-8")
    explained = re.findall(r"^\| `(\w+)` \|", text, flags=re.MULTILINE)

    assert sorted(explained) == sorted(str(state) for state in RunState)


def test_diagram_has_one_edge_per_transition_source() -> None:
    lines = mermaid_diagram().splitlines()
    edges_drawn = [line for line in lines if ": " in line]
    expected = sum(len(row["source"]) if isinstance(row["source"], list) else 1
                   for row in TRANSITIONS)
    assert len(edges_drawn) == expected
    assert lines[0] == "stateDiagram-v2"
    assert {line.strip() for line in lines if line.endswith("--> [*]")} == {
        f"{state} --> [*]" for state in TERMINAL}
