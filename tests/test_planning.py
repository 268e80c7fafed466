"""Planning without a model: shortlisting, every validation rule, the offline planner."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from pydantic import BaseModel, Field

from osprey_core.hookspecs.capabilities import Capability
from osprey_core.models import Plan, PlanStep
from osprey_core.planning import (
    OfflinePlanner,
    PlanningError,
    PlanRequest,
    PlanValidationError,
    parse_plan,
    rank_capabilities,
    validate_plan,
)
from osprey_core.plugins.core_capabilities import Clarify, Respond
from osprey_core.registry import Registry

CHANNEL = re.compile(r"\b[A-Z][A-Z0-9]*:[A-Z0-9:_]+\b")


class ReadParameters(BaseModel):
    """Deliberately without ``extra="forbid"``: validation must refuse extras anyway."""

    channels: list[str] = Field(min_length=1)
    timeout: float = 2.0


class ReadChannels(Capability):
    name = "read_channels"
    description = "Read the current values of control system channels (PVs)."
    provides = ("channel_values",)
    parameters = ReadParameters

    def match(self, query: str) -> dict[str, Any] | None:
        channels = CHANNEL.findall(query)
        return {"channels": channels} if "read" in query.lower() and channels else None

    async def execute(self, step: Any) -> Any:
        return {channel: 1.0 for channel in step.parameters.channels}


class PlotParameters(BaseModel):
    title: str = "Channel values"


class PlotData(Capability):
    name = "plot_data"
    description = "Draw a chart of channel values."
    requires = ("channel_values",)
    provides = ("figure",)
    parameters = PlotParameters

    def match(self, query: str) -> dict[str, Any] | None:
        return {"title": "Requested plot"} if "plot" in query.lower() else None

    async def execute(self, step: Any) -> Any:
        return {"figure": step.parameters.title}


class LogbookSearch(Capability):
    name = "logbook_search"
    description = "Search the electronic logbook for entries about past events."
    provides = ("logbook_entries",)

    def match(self, query: str) -> dict[str, Any] | None:
        return {} if "logbook" in query.lower() else None

    async def execute(self, step: Any) -> Any:
        return []


def registry(*capabilities: Capability) -> Registry[Capability]:
    found: Registry[Capability] = Registry("capability", Capability, "instance")
    for capability in capabilities:
        found.add(capability, plugin="tests")
    return found


@pytest.fixture
def capabilities() -> Registry[Capability]:
    return registry(ReadChannels(), PlotData(), LogbookSearch(), Respond(), Clarify())


def step(capability: str, output: str, *, inputs: list[str] | None = None,
         **parameters: Any) -> dict[str, Any]:
    return {"capability": capability, "parameters": parameters, "inputs": inputs or [],
            "output": output}


def problems_of(plan: Any, capabilities: Registry[Capability],
                context_keys: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(PlanValidationError) as caught:
        validate_plan(plan, capabilities, context_keys)
    for problem in caught.value.problems:
        assert f"- {problem}" in str(caught.value)
    return caught.value.problems


# -- ranking ---------------------------------------------------------------------------


def test_ranking_puts_the_relevant_capability_first_and_keeps_terminal_ones(
    capabilities: Registry[Capability],
) -> None:
    ranked = rank_capabilities("search the logbook for last night's events", capabilities, 1)
    assert [item.name for item in ranked] == ["logbook_search", "clarify", "respond"]

    ranked = rank_capabilities("draw a chart of the beam current", capabilities, 2)
    assert [item.name for item in ranked][:1] == ["plot_data"]
    assert {"respond", "clarify"} <= {item.name for item in ranked}


def test_ranking_splits_names_on_underscores(capabilities: Registry[Capability]) -> None:
    for query in ("use read_channels please", "read SR:CURRENT"):
        assert rank_capabilities(query, capabilities, 1)[0].name == "read_channels"


def test_ranking_ties_keep_input_order(capabilities: Registry[Capability]) -> None:
    ranked = rank_capabilities("xyzzy", capabilities, 2)
    # Registry order is by name: logbook_search, plot_data, read_channels.
    assert [item.name for item in ranked] == ["logbook_search", "plot_data", "clarify", "respond"]
    assert rank_capabilities("xyzzy", capabilities, 2) == ranked


@pytest.mark.parametrize(("query", "expected"), [
    ("compute something about HCM1:SP", "python"),
    ("computes the mean of BPM1:X about the last hour", "python"),
    ("what do you remember about BPMs", "memory_recall"),
    ("has the RF cavity tripped before?", "logbook_search"),
    ("set HCM1:SP to 2.0", "channel_write"),
])
def test_the_default_shortlist_of_the_installed_capabilities_keeps_the_right_one(
        query: str, expected: str) -> None:
    # Common words ("about", "something") decide nothing and endings are folded
    # ("compute" finds "computed"): with every built-in installed the shortlist is full.
    from osprey_core.plugin_host import load_plugins
    from osprey_core.settings import PlanningSettings

    installed = list(load_plugins(environ={}).capabilities())
    limit = PlanningSettings().max_candidates
    assert len([item for item in installed if not item.terminal]) > limit
    names = [item.name for item in rank_capabilities(query, installed, limit)]
    assert expected in names[:limit]


def test_common_words_do_not_change_the_ranking(capabilities: Registry[Capability]) -> None:
    for query in ("draw a chart of the beam current", "read SR:CURRENT"):
        padded = f"what about something that you could do for me: {query}"
        assert rank_capabilities(padded, capabilities, 3) == rank_capabilities(
            query, capabilities, 3)


def test_ranking_with_only_terminal_capabilities() -> None:
    assert [item.name for item in rank_capabilities("hi", registry(Respond()), 5)] == ["respond"]


# -- validation ------------------------------------------------------------------------


def test_valid_plan_is_normalised_and_gets_a_respond_step(
    capabilities: Registry[Capability],
) -> None:
    plan = {"steps": [step("read_channels", "values", channels=["SR:CURRENT"]),
                      step("plot_data", "chart", inputs=["values"])],
            "reasoning": "read, then plot"}
    checked = validate_plan(plan, capabilities)
    assert [s.capability for s in checked.steps] == ["read_channels", "plot_data", "respond"]
    assert checked.steps[0].parameters == {"channels": ["SR:CURRENT"], "timeout": 2.0}
    assert checked.steps[1].parameters == {"title": "Channel values"}
    assert checked.steps[2].inputs == ["values", "chart"]
    assert checked.steps[2].output == "response"
    assert checked.steps[2].parameters == {"message": ""}
    assert checked.reasoning == "read, then plot"
    # Validating the normalised plan again changes nothing, so its hash is stable.
    assert validate_plan(checked, capabilities).sha256() == checked.sha256()


def test_appended_respond_avoids_taken_output_keys(capabilities: Registry[Capability]) -> None:
    plan = Plan(steps=[PlanStep(capability="logbook_search", output="response")])
    checked = validate_plan(plan, capabilities, ["response_2"])
    assert checked.steps[-1].output == "response_3"
    assert checked.steps[-1].inputs == ["response"]


def test_plan_ending_with_a_terminal_step_is_left_alone(
    capabilities: Registry[Capability],
) -> None:
    plan = {"steps": [step("clarify", "question", unclear="the request")]}
    checked = validate_plan(plan, capabilities)
    assert [s.capability for s in checked.steps] == ["clarify"]
    assert checked.steps[0].parameters == {"unclear": "the request", "options": []}


def test_without_respond_registered_nothing_is_appended() -> None:
    plan = {"steps": [step("logbook_search", "entries")]}
    checked = validate_plan(plan, registry(LogbookSearch()))
    assert [s.capability for s in checked.steps] == ["logbook_search"]


def test_unknown_capability_suggests_the_closest_name(
    capabilities: Registry[Capability],
) -> None:
    problems = problems_of({"steps": [step("read_channel", "values", channels=["A:B"])]},
                           capabilities)
    assert problems == [
        "step 1 (capability 'read_channel'): no capability named 'read_channel' is registered "
        "(did you mean 'read_channels'?); registered: clarify, logbook_search, plot_data, "
        "read_channels, respond"
    ]


def test_internal_run_state_is_not_a_capability(capabilities: Registry[Capability]) -> None:
    plan = {"steps": [step("logbook_search", "entries"), step("executing", "run")]}
    problems = problems_of(plan, capabilities)
    assert len(problems) == 1
    assert problems[0].startswith(
        "step 2 (capability 'executing'): 'executing' is an internal run state, "
        "not a capability; capabilities: clarify, ")


def test_parameters_are_checked_against_the_model(capabilities: Registry[Capability]) -> None:
    plan = {"steps": [
        step("read_channels", "a", channels="SR:CURRENT"),
        step("read_channels", "b", channels=["SR:CURRENT"], timeout="soon"),
        step("read_channels", "c"),
    ]}
    assert problems_of(plan, capabilities) == [
        "step 1 (capability 'read_channels'): parameter 'channels': Input should be a valid "
        "list (got 'SR:CURRENT')",
        "step 2 (capability 'read_channels'): parameter 'timeout': Input should be a valid "
        "number, unable to parse string as a number (got 'soon')",
        "step 3 (capability 'read_channels'): missing required parameter 'channels'",
    ]


def test_extra_parameters_are_refused_with_their_path(
    capabilities: Registry[Capability],
) -> None:
    plan = {"steps": [step("read_channels", "a", channels=["X:Y"], mode="write"),
                      step("logbook_search", "b", limit=5, since="yesterday")]}
    assert problems_of(plan, capabilities) == [
        "step 1 (capability 'read_channels'): unexpected parameter 'mode' "
        "(accepted: channels, timeout)",
        "step 2 (capability 'logbook_search'): takes no parameters, got 'limit', 'since'",
    ]


def test_inputs_must_come_from_context_or_earlier_steps(
    capabilities: Registry[Capability],
) -> None:
    plan = {"steps": [
        step("plot_data", "chart", inputs=["values", "beam"]),
        step("read_channels", "values", inputs=["values"], channels=["SR:CURRENT"]),
        step("logbook_search", "entries", inputs=["shift", "nothing"]),
    ]}
    assert problems_of(plan, capabilities, ("shift",)) == [
        "step 1 (capability 'plot_data'): requires context 'channel_values', which only "
        "step 2 (capability 'read_channels') provides, and that runs later",
        "step 1 (capability 'plot_data'): input 'values' is produced by a later step "
        "(step 2); a step can only read earlier outputs",
        "step 1 (capability 'plot_data'): input 'beam' is neither in the request context nor "
        "an earlier step's output (available here: shift)",
        "step 2 (capability 'read_channels'): input 'values' is this step's own output",
        "step 3 (capability 'logbook_search'): input 'nothing' is neither in the request "
        "context nor an earlier step's output (available here: shift, chart, values)",
    ]


def test_requirements_can_come_from_the_request_context(
    capabilities: Registry[Capability],
) -> None:
    plan = {"steps": [step("plot_data", "chart", inputs=["channel_values"])]}
    assert validate_plan(plan, capabilities, ["channel_values"]).steps[0].inputs == [
        "channel_values"]
    assert problems_of(plan, capabilities) == [
        "step 1 (capability 'plot_data'): requires context 'channel_values', which neither "
        "the request context nor any earlier step provides",
        "step 1 (capability 'plot_data'): input 'channel_values' is neither in the request "
        "context nor an earlier step's output (available here: none)",
    ]


def test_terminal_step_only_at_the_end(capabilities: Registry[Capability]) -> None:
    plan = {"steps": [step("logbook_search", "entries"),
                      step("respond", "answer", inputs=["entries"]),
                      step("read_channels", "values", channels=["SR:CURRENT"])]}
    assert problems_of(plan, capabilities) == [
        "step 2 (capability 'respond'): 'respond' answers the user, so it may only be the "
        "last step (the plan has 3)",
    ]


def test_duplicate_outputs_name_both_steps(capabilities: Registry[Capability]) -> None:
    plan = {"steps": [step("read_channels", "values", channels=["A:B"]),
                      step("logbook_search", "values")]}
    assert problems_of(plan, capabilities) == [
        "step 2 (capability 'logbook_search'): output 'values' is already produced by step 1 "
        "(capability 'read_channels'); output keys must be unique",
    ]


def test_output_may_not_overwrite_request_context(capabilities: Registry[Capability]) -> None:
    plan = {"steps": [step("logbook_search", "shift")]}
    assert problems_of(plan, capabilities, ("shift",)) == [
        "step 1 (capability 'logbook_search'): output 'shift' would overwrite the request "
        "context key of that name",
    ]


def test_empty_plan_is_refused(capabilities: Registry[Capability]) -> None:
    assert problems_of({"steps": []}, capabilities) == [
        "the plan has no steps: it needs at least one"]


def test_structure_problems_are_reported_with_step_numbers(
    capabilities: Registry[Capability],
) -> None:
    plan = {"steps": [step("logbook_search", "entries"),
                      {**step("logbook_search", "Bad-Key"), "approved": True}],
            "approval": {"mode": "disabled"}}
    problems = problems_of(plan, capabilities)
    assert problems[0] == ("step 2: field 'output': Value error, must be a lower-case "
                           "identifier (letters, digits, '_')")
    assert problems[1] == ("step 2: unexpected field 'approved' (allowed: capability, "
                           "parameters, inputs, output, description)")
    assert problems[2] == "plan: unexpected field 'approval' (allowed: steps, reasoning)"
    assert problems_of({"reasoning": "none"}, capabilities) == [
        "plan: field 'steps' is required"]
    assert problems_of(["not", "a", "plan"], capabilities) == [
        "a plan must be an object with 'steps', got list"]


def test_parse_plan_checks_structure_without_a_registry() -> None:
    plan = parse_plan({"steps": [step("anything", "out", inputs=["later"], x=1)]})
    assert plan.steps[0].parameters == {"x": 1}
    assert parse_plan(plan) is plan
    with pytest.raises(PlanValidationError) as caught:
        parse_plan({"steps": [{"capability": "", "output": "out"}]})
    assert caught.value.problems == [
        "step 1: field 'capability': String should have at least 1 character"]


def test_all_problems_are_collected(capabilities: Registry[Capability]) -> None:
    plan = {"steps": [step("planning", "a"), step("read_channels", "a"),
                      step("clarify", "b", unclear="x"), step("logbook_search", "c", x=1)]}
    with pytest.raises(PlanValidationError) as caught:
        validate_plan(plan, capabilities)
    assert len(caught.value.problems) == 5
    assert str(caught.value).startswith("the plan is invalid (5 problems):\n- step 1 ")


# -- offline planner -------------------------------------------------------------------


def plan_offline(capabilities: Registry[Capability], query: str,
                 context_keys: tuple[str, ...] = ()) -> Plan:
    request = PlanRequest(query=query, capabilities=list(capabilities),
                          context_keys=context_keys, user="op", session="s1")
    return asyncio.run(OfflinePlanner(capabilities).plan(request))


def test_offline_plan_orders_providers_first_and_ends_with_respond() -> None:
    # Plot is listed first, but it needs the values that read_channels provides.
    capabilities = registry(PlotData(), ReadChannels(), Respond(), Clarify())
    request = PlanRequest(query="read SR:CURRENT and SR:LIFETIME, then plot them",
                          capabilities=[PlotData(), ReadChannels(), Respond(), Clarify()])
    plan = asyncio.run(OfflinePlanner(capabilities).plan(request))
    assert [(s.capability, s.inputs, s.output) for s in plan.steps] == [
        ("read_channels", [], "read_channels"),
        ("plot_data", ["read_channels"], "plot_data"),
        ("respond", ["read_channels", "plot_data"], "response"),
    ]
    assert plan.steps[0].parameters == {"channels": ["SR:CURRENT", "SR:LIFETIME"],
                                        "timeout": 2.0}
    again = asyncio.run(OfflinePlanner(capabilities).plan(request))
    assert again.sha256() == plan.sha256()


@pytest.mark.parametrize(("query", "order"), [
    ("check the logbook, then read SR:CURRENT", ["logbook_search", "read_channels"]),
    ("read SR:CURRENT and check the logbook", ["read_channels", "logbook_search"]),
])
def test_offline_steps_follow_the_order_the_request_names_them(query: str,
                                                                order: list[str]) -> None:
    listed = [ReadChannels(), LogbookSearch(), Respond()]
    for capabilities in (listed, listed[::-1]):  # whatever order they are registered in
        plan = plan_offline(registry(*capabilities), query)
        assert [step.capability for step in plan.steps] == [*order, "respond"]


def test_offline_plan_reads_requirements_from_the_context(
    capabilities: Registry[Capability],
) -> None:
    plan = plan_offline(capabilities, "plot the usual", ("channel_values",))
    assert [(s.capability, s.inputs) for s in plan.steps] == [
        ("plot_data", ["channel_values"]), ("respond", ["plot_data"])]


def test_offline_output_keys_are_valid_and_unique() -> None:
    class Dotted(LogbookSearch):
        name = "facility.logbook-search"

    capabilities = registry(Dotted(), LogbookSearch(), Respond())
    plan = plan_offline(capabilities, "check the logbook", ("facility_logbook_search",))
    assert [s.output for s in plan.steps] == [
        "facility_logbook_search_2", "logbook_search", "response"]


def test_offline_falls_back_to_clarify(capabilities: Registry[Capability]) -> None:
    plan = plan_offline(capabilities, "make me a coffee")
    assert len(plan.steps) == 1
    clarify = plan.steps[0]
    assert clarify.capability == "clarify"
    assert clarify.parameters["unclear"] == (
        "no capability matched the request 'make me a coffee'")
    assert clarify.parameters["options"] == [
        "logbook_search: Search the electronic logbook for entries about past events.",
        "plot_data: Draw a chart of channel values.",
        "read_channels: Read the current values of control system channels (PVs).",
    ]


def test_offline_without_clarify_fails_cleanly() -> None:
    with pytest.raises(PlanningError, match="no 'clarify' capability is registered"):
        plan_offline(registry(LogbookSearch(), Respond()), "make me a coffee")


def test_offline_names_a_capability_whose_match_fails() -> None:
    class Broken(LogbookSearch):
        def match(self, query: str) -> dict[str, Any] | None:
            raise KeyError("oops")

    with pytest.raises(PlanningError, match="capability 'logbook_search' failed while "
                                            "matching the request: KeyError: 'oops'"):
        plan_offline(registry(Broken(), Respond()), "anything")


def test_offline_plan_that_cannot_satisfy_a_requirement_is_refused(
    capabilities: Registry[Capability],
) -> None:
    with pytest.raises(PlanValidationError, match="requires context 'channel_values'"):
        plan_offline(capabilities, "plot something")
