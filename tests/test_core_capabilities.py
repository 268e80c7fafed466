"""The built-in ``respond`` and ``clarify`` capabilities, loaded the way users get them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from osprey_core.hookspecs.capabilities import Capability, StepContext
from osprey_core.planning import (
    CLARIFY,
    RESPOND,
    OfflinePlanner,
    PlanRequest,
    RespondParameters,
    rank_capabilities,
)
from osprey_core.plugin_host import load_plugins
from osprey_core.plugins.core_capabilities import Clarify, Respond


def context(parameters: Any, inputs: dict[str, Any] | None = None) -> StepContext:
    return StepContext(run_id="run-1", index=0, query="q", user="op", session="s1",
                       parameters=parameters, inputs=inputs or {})


def run(capability: Capability, step: StepContext) -> Any:
    return asyncio.run(capability.execute(step))


@pytest.mark.exercises_hook("register_capabilities")
def test_both_are_registered_through_the_entry_point() -> None:
    capabilities = load_plugins(environ={}).capabilities()
    for name in (RESPOND, CLARIFY):
        capability = capabilities.get(name)
        assert capabilities.origin(name) == "core_capabilities"
        assert capability.terminal and not capability.side_effects
    assert capabilities.get(RESPOND).parameters is RespondParameters


@pytest.mark.exercises_hook("register_capabilities")
def test_offline_planner_with_the_loaded_plugins_asks_for_clarification() -> None:
    capabilities = load_plugins(environ={}).capabilities()
    query = "brew some coffee"
    request = PlanRequest(query=query, capabilities=rank_capabilities(query, capabilities, 8))
    plan = asyncio.run(OfflinePlanner(capabilities).plan(request))
    assert [step.capability for step in plan.steps] == [CLARIFY]
    answer = run(capabilities.get(CLARIFY), context(plan.steps[0].parameters))
    assert answer.startswith(
        "I did not understand: no capability matched the request 'brew some coffee'.\n"
        "Could you rephrase the request?")


def offline_plan(query: str) -> Any:
    capabilities = load_plugins(environ={}).capabilities()
    request = PlanRequest(query=query, capabilities=rank_capabilities(query, capabilities, 8))
    return asyncio.run(OfflinePlanner(capabilities).plan(request))


@pytest.mark.exercises_hook("register_capabilities")
@pytest.mark.parametrize("query, planned", [
    ("read SR:CURRENT and BPM1:X", ["channel_read"]),  # one step covers both parts
    ("read SR:CURRENT then remember that I like BPMs", ["channel_read", "memory_save"]),
    ("history of SR:CURRENT over the last hour and read BPM1:X",
     ["archiver_retrieval", "channel_read"]),
])
def test_the_offline_planner_plans_every_part_of_a_request(query: str,
                                                           planned: list[str]) -> None:
    plan = offline_plan(query)
    assert [step.capability for step in plan.steps] == [*planned, RESPOND]
    assert plan.steps[-1].parameters["message"] == "" and "Left out" not in plan.reasoning


@pytest.mark.exercises_hook("register_capabilities")
def test_the_offline_planner_names_the_part_it_left_out() -> None:
    plan = offline_plan("read SR:CURRENT and brew some coffee, please")
    assert [step.capability for step in plan.steps] == ["channel_read", RESPOND]
    assert plan.steps[-1].inputs == ["channel_read"]
    assert plan.steps[-1].parameters["message"].startswith(
        "Not done: I did not understand 'brew some coffee' (no capability matched")
    assert "Left out (nothing matched): 'brew some coffee'." in plan.reasoning


def test_respond_renders_every_input_in_order() -> None:
    inputs = {
        "channel_values": {"SR:CURRENT": 401.5, "SR:LIFETIME": None},
        "notes": ["beam dump at 03:12", {"shift": "owl"}],
        "count": 3,
        "ok": True,
        "summary": "two lines\nof text",
        "empty": [],
    }
    answer = run(Respond(), context({"message": "Here is what I found."}, inputs))
    assert answer == (
        "Here is what I found.\n\n"
        "channel_values:\n  SR:CURRENT: 401.5\n  SR:LIFETIME: —\n\n"
        "notes:\n  - beam dump at 03:12\n  - shift: owl\n\n"
        "count: 3\n\n"
        "ok: yes\n\n"
        "summary:\n  two lines\n  of text\n\n"
        "empty: (none)"
    )


def test_respond_accepts_validated_parameters_and_empty_inputs() -> None:
    assert run(Respond(), context(RespondParameters())) == (
        "Done. There are no results to report.")
    assert run(Respond(), context({}, {"value": 1})) == "value: 1"


def test_clarify_names_what_was_unclear_and_what_it_can_do() -> None:
    parameters = {"unclear": "which magnet 'the big one' is",
                  "options": ["read_channels: Read channel values.", "plot_data: Draw a chart."]}
    assert run(Clarify(), context(parameters)) == (
        "I did not understand: which magnet 'the big one' is.\n"
        "Could you rephrase the request?\n\n"
        "I can:\n- read_channels: Read channel values.\n- plot_data: Draw a chart."
    )


def test_loading_the_plugin_stays_light() -> None:
    """Plugins load for every CLI call (``osprey --help``); pydantic waits for real use."""
    probe = (
        "import json, sys\n"
        "import osprey_core.plugins.core_capabilities\n"
        "print(json.dumps(sorted({'pydantic', 'numpy', 'openai'} & set(sys.modules))))"
    )
    result = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True,
                            check=True, timeout=60)
    assert json.loads(result.stdout) == []
