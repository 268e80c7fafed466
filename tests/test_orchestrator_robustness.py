"""Runs end cleanly whatever a plugin throws, and sync to disk exactly where it matters."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from support.orchestration import Lab

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.capabilities import Capability, PreparedAction, StepContext
from osprey_core.models import Plan
from osprey_core.run_machine import RunState
from osprey_core.store import RunStore


class BrokenPrepare(Capability):
    """A side-effecting capability whose prepare() has a bug (not an OspreyError)."""

    name = "broken_prepare"
    description = "Open the beam shutter."
    side_effects = True

    def match(self, query: str) -> dict[str, Any] | None:
        return {} if "shutter" in query else None

    async def prepare(self, step: StepContext) -> PreparedAction:
        raise ValueError("shutter map is missing")

    async def execute(self, step: StepContext) -> Any:
        raise AssertionError("must never run")


class BrokenPreparePlugin:
    @hookimpl
    def register_capabilities(self, register: Any) -> None:
        register(BrokenPrepare())


def test_a_crashing_prepare_fails_the_run_instead_of_stranding_it(lab: Lab) -> None:
    osprey = lab.osprey((BrokenPreparePlugin(), "broken"))

    run = osprey.run("open the shutter")

    assert run.state is RunState.FAILED
    assert run.error == "ValueError: shutter map is missing"
    assert osprey.get_run(run.id).state is RunState.FAILED
    assert [entry.action for entry in osprey.audit(run_id=run.id)][-1] == "run_failed"


def test_a_crashing_planner_fails_the_run(lab: Lab) -> None:
    class ExplodingPlanner:
        async def plan(self, request: Any) -> Plan:
            raise KeyError("planner bug")

    osprey = lab.osprey()
    osprey.runtime.planner_factory = lambda runtime: ExplodingPlanner()  # type: ignore[assignment,return-value]

    run = osprey.run("read the beam current")

    assert run.state is RunState.FAILED
    assert run.error == "planning failed: KeyError: 'planner bug'"


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_a_plan_file_lost_to_a_crash_is_restored_from_the_store(lab: Lab, damage: str) -> None:
    osprey = lab.osprey()
    paused = osprey.run("/planning read the beam current")
    path = osprey.plan_file(paused.id)
    original = path.read_text()
    if damage == "deleted":
        path.unlink()
    else:
        path.write_text("")

    done = osprey.approve(paused.approval_id or "")

    assert done.state is RunState.DONE
    assert path.read_text() == original


def test_the_openai_extra_missing_is_a_clear_planning_failure(
    lab: Lab, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # import openai -> ImportError
    lab.environ["OSPREY__LLM__BASE_URL"] = "http://127.0.0.1:9/v1"
    osprey = lab.osprey()

    run = osprey.run("read the beam current")

    assert run.state is RunState.FAILED
    assert "pip install 'osprey-core[llm]'" in (run.error or "")


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, str]]:
    """Every store commit as (synced to disk, run state written by it)."""
    commits: list[tuple[bool, str]] = []
    original = RunStore.transaction

    @contextlib.contextmanager
    def spy(self: RunStore, *, durable: bool = True) -> Iterator[RunStore]:
        written: list[str] = []
        update_run = self.update_run

        def recording(run: Any, **kwargs: Any) -> None:
            written.append(str(run.state))
            update_run(run, **kwargs)

        self.update_run = recording  # type: ignore[method-assign]
        try:
            with original(self, durable=durable) as store:
                yield store
        finally:
            del self.update_run
        commits.append((durable, written[-1] if written else "(new run)"))

    monkeypatch.setattr(RunStore, "transaction", spy)
    return commits


def test_only_pauses_side_effects_and_the_end_are_synced(
    lab: Lab, synced: list[tuple[bool, str]],
) -> None:
    osprey = lab.osprey()
    paused = osprey.run("/planning set the magnet to 2")
    osprey.approve(paused.approval_id or "")
    synced.clear()
    step_pause = osprey.get_run(paused.id)
    assert step_pause.state is RunState.AWAITING_STEP_APPROVAL

    done = osprey.approve(step_pause.approval_id or "")

    assert done.state is RunState.DONE
    # The decision itself rides unsynced (nothing outside the process has happened yet);
    # the side-effecting step is synced before and after it runs, and so is the end.
    assert synced == [
        (False, "executing"),  # approval decided, run continues
        (True, "executing"),  # set_magnet marked running: synced before the write
        (True, "executing"),  # set_magnet finished
        (False, "responding"),
        (True, "done"),
    ]


def test_a_read_only_run_syncs_its_pause_and_its_end_only(
    lab: Lab, synced: list[tuple[bool, str]],
) -> None:
    osprey = lab.osprey()
    synced.clear()  # opening the store (schema check) is not part of the run

    paused = osprey.run("/planning read the beam current")
    osprey.approve(paused.approval_id or "")

    assert [state for durable, state in synced if durable] == ["awaiting_plan_approval", "done"]
    assert len(synced) > 2  # every other state change is still committed
