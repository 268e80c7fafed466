"""Plan validation: every rule a plan must satisfy before it is shown, approved or run.

Plans come from an LLM, an offline matcher or an operator's edit, so none is trusted:
all problems are collected and reported together, each naming its step (numbered from 1)
precisely enough to fix it without reading code.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from osprey_core.hookspecs.capabilities import Capability
from osprey_core.models import Plan, PlanStep
from osprey_core.planning.base import PlanLimits, PlanValidationError
from osprey_core.planning.terminal import RESPOND
from osprey_core.registry import Registry, did_you_mean
from osprey_core.run_machine import RunState

_RUN_STATES = frozenset(state.value for state in RunState)


def validate_plan(
    plan: Plan | Mapping[str, Any],
    capabilities: Registry[Capability],
    context_keys: Iterable[str] = (),
    limits: PlanLimits | None = None,
) -> Plan:
    """The plan with parameters normalised to validated JSON, or :class:`PlanValidationError`.

    ``plan`` may be raw JSON data (an LLM reply, an edited plan file); unknown fields are
    refused, so nothing beyond steps and reasoning can ride along. ``context_keys`` are the
    request-context keys (the run's, plus the context type of each block the data providers
    gathered); each also counts as a context type for ``requires``.

    A plan that does not end with a terminal step gets a ``respond`` step appended that
    reads every step's output (only when ``respond`` is registered), so every run ends
    by answering the user.
    """
    if limits is not None:
        limits.check(plan)
    context = list(dict.fromkeys(context_keys))
    checked = _check(parse_plan(plan), capabilities, context)
    if RESPOND in capabilities and not capabilities.get(checked.steps[-1].capability).terminal:
        return _check(_with_respond(checked, context), capabilities, context)
    return checked


def parse_plan(plan: Any) -> Plan:
    """The plan's structure only (fields, types, output keys); no registry needed.

    Raises :class:`PlanValidationError` naming each structural problem; the rules that
    need the capabilities are :func:`validate_plan`'s.
    """
    if isinstance(plan, Plan):
        return plan
    if not isinstance(plan, Mapping):
        raise PlanValidationError(
            [f"a plan must be an object with 'steps', got {type(plan).__name__}"])
    try:
        return Plan.model_validate(plan)
    except ValidationError as exc:
        raise PlanValidationError([_structure_problem(error) for error in exc.errors()]) from None


def _structure_problem(error: Any) -> str:
    loc = error["loc"]
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        where, rest, model = f"step {loc[1] + 1}", loc[2:], PlanStep
    else:
        where, rest, model = "plan", loc, Plan
    path = ".".join(str(part) for part in rest)
    if error["type"] == "extra_forbidden":
        return f"{where}: unexpected field '{path}' (allowed: {', '.join(model.model_fields)})"
    if error["type"] == "missing":
        return f"{where}: field '{path}' is required"
    return f"{where}: field '{path}': {error['msg']}"


def _check(plan: Plan, capabilities: Registry[Capability], context: list[str]) -> Plan:
    if not plan.steps:
        raise PlanValidationError(["the plan has no steps: it needs at least one"])
    problems: list[str] = []
    normalised: list[PlanStep] = []
    outputs: dict[str, int] = {}  # output key -> number of the earlier step producing it
    provided = set(context)  # context types available so far
    for number, step in enumerate(plan.steps, 1):
        found: list[str] = []
        parameters = step.parameters
        capability = capabilities.get(step.capability) if step.capability in capabilities else None
        if capability is None:
            found.append(_unknown_capability(step.capability, capabilities))
        else:
            parameters, errors = _parameters(capability, step.parameters)
            found += errors
            if capability.terminal and number < len(plan.steps):
                found.append(f"'{capability.name}' answers the user, so it may only be the "
                             f"last step (the plan has {len(plan.steps)})")
            found += _requirements(capability, provided, plan, number, capabilities)
            provided.update(capability.provides)
        found += _inputs(step, number, plan, outputs, context)
        found += _output(step, plan, outputs, context)
        outputs.setdefault(step.output, number)
        problems += [f"step {number} (capability '{step.capability}'): {p}" for p in found]
        normalised.append(step.model_copy(update={"parameters": parameters}))
    if problems:
        raise PlanValidationError(problems)
    return plan.model_copy(update={"steps": normalised})


def _unknown_capability(name: str, capabilities: Registry[Capability]) -> str:
    known = ", ".join(capabilities.names()) or "none"
    if name in _RUN_STATES:
        return f"'{name}' is an internal run state, not a capability; capabilities: {known}"
    hint = did_you_mean(name, capabilities.names())
    return f"no capability named '{name}' is registered{hint}; registered: {known}"


def _parameters(
    capability: Capability, parameters: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    model = capability.parameters
    if model is None:
        if parameters:
            names = ", ".join(f"'{key}'" for key in parameters)
            return parameters, [f"takes no parameters, got {names}"]
        return {}, []
    try:
        validated = _forbidding_extras(model).model_validate(parameters)
    except ValidationError as exc:
        accepted = ", ".join(info.alias or name for name, info in model.model_fields.items())
        return parameters, [_parameter_problem(error, accepted) for error in exc.errors()]
    return validated.model_dump(mode="json", by_alias=True), []


@functools.cache
def _forbidding_extras(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` refusing unknown keys: a misspelt or smuggled parameter must not vanish."""
    if model.model_config.get("extra") == "forbid":
        return model
    namespace = {"__module__": model.__module__, "model_config": ConfigDict(extra="forbid")}
    return type(model.__name__, (model,), namespace)


def _parameter_problem(error: Any, accepted: str) -> str:
    loc = error["loc"]
    path = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        extra = f" (accepted: {accepted or 'none'})" if len(loc) == 1 else ""
        return f"unexpected parameter '{path}'{extra}"
    if error["type"] == "missing":
        return f"missing required parameter '{path}'"
    subject = f"parameter '{path}'" if path else "parameters"
    return f"{subject}: {error['msg']} (got {_short(error['input'])})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _requirements(
    capability: Capability,
    provided: set[str],
    plan: Plan,
    number: int,
    capabilities: Registry[Capability],
) -> list[str]:
    problems = []
    for needed in capability.requires:
        if needed in provided:
            continue
        later = [
            f"step {index} (capability '{step.capability}')"
            for index, step in enumerate(plan.steps[number:], number + 1)
            if step.capability in capabilities
            and needed in capabilities.get(step.capability).provides
        ]
        if later:
            problems.append(f"requires context '{needed}', which only {later[0]} provides, "
                            "and that runs later")
        else:
            problems.append(f"requires context '{needed}', which neither the request context "
                            "nor any earlier step provides")
    return problems


def _inputs(
    step: PlanStep, number: int, plan: Plan, outputs: dict[str, int], context: list[str]
) -> list[str]:
    problems = []
    for key in step.inputs:
        if key in outputs or key in context:
            continue
        if key == step.output:
            problems.append(f"input '{key}' is this step's own output")
            continue
        later = [index for index, other in enumerate(plan.steps, 1)
                 if index > number and other.output == key]
        if later:
            problems.append(f"input '{key}' is produced by a later step (step {later[0]}); "
                            "a step can only read earlier outputs")
        else:
            available = ", ".join([*context, *outputs]) or "none"
            problems.append(f"input '{key}' is neither in the request context nor an earlier "
                            f"step's output (available here: {available})")
    return problems


def _output(
    step: PlanStep, plan: Plan, outputs: dict[str, int], context: list[str]
) -> list[str]:
    if (first := outputs.get(step.output)) is not None:
        other = plan.steps[first - 1].capability
        return [f"output '{step.output}' is already produced by step {first} "
                f"(capability '{other}'); output keys must be unique"]
    if step.output in context:
        return [f"output '{step.output}' would overwrite the request context key of that name"]
    return []


def _with_respond(plan: Plan, context: list[str]) -> Plan:
    taken = {step.output for step in plan.steps} | set(context)
    candidates = itertools.chain(["response"], (f"response_{n}" for n in itertools.count(2)))
    key = next(candidate for candidate in candidates if candidate not in taken)
    respond = PlanStep(
        capability=RESPOND,
        inputs=[step.output for step in plan.steps],
        output=key,
        description="Answer the user with the results (added because the plan did not end "
        "with an answering step).",
    )
    return plan.model_copy(update={"steps": [*plan.steps, respond]})
