"""Fakes for the families the core receives as instances: capabilities, data providers,
approval policies (configured through their constructors)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from osprey_core.hookspecs.approval_policies import ApprovalPolicy, Verdict, Vote
from osprey_core.hookspecs.capabilities import Capability
from osprey_core.hookspecs.data_providers import DataProvider

if TYPE_CHECKING:
    from pydantic import BaseModel


class FakeCapability(Capability):
    """A capability that records each step and returns a result or raises.

    ``handler`` (a function of the step) takes precedence over the constant ``result``;
    ``error`` makes every execution raise, to exercise the core's failure handling.
    ``matcher`` stands in for :meth:`match`, so offline planning can pick the fake.
    """

    def __init__(
        self,
        name: str = "fake_capability",
        *,
        description: str = "A fake capability for tests.",
        provides: Sequence[str] = (),
        requires: Sequence[str] = (),
        side_effects: bool = False,
        runs_code: bool = False,
        terminal: bool = False,
        approval_kind: str = "step",
        parameters: type[BaseModel] | None = None,
        matcher: Callable[[str], dict[str, Any] | None] | None = None,
        result: Any = None,
        handler: Callable[[Any], Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.provides = tuple(provides)
        self.requires = tuple(requires)
        self.side_effects = side_effects
        self.runs_code = runs_code
        self.terminal = terminal
        self.approval_kind = approval_kind
        self.parameters = parameters
        self.matcher = matcher
        self.result = result
        self.handler = handler
        self.error = error
        self.calls: list[Any] = []

    def match(self, query: str) -> dict[str, Any] | None:
        return self.matcher(query) if self.matcher is not None else None

    async def execute(self, step: Any) -> Any:
        self.calls.append(step)
        if self.error is not None:
            raise self.error
        return self.handler(step) if self.handler is not None else self.result


class FakeDataProvider(DataProvider):
    """A provider returning configured context, optionally slowly or with an error.

    ``delay`` (seconds) lets tests check per-provider timeouts and parallel fetching.
    """

    def __init__(
        self,
        name: str = "fake_provider",
        *,
        context_type: str = "fake_context",
        context: Any = None,
        delay: float = 0.0,
        error: BaseException | None = None,
        responds: bool | Callable[[Any], bool] = True,
    ) -> None:
        self.name = name
        self.context_type = context_type
        self.context = context
        self.delay = delay
        self.error = error
        self.responds = responds
        self.requests: list[Any] = []

    def should_respond(self, request: Any) -> bool:
        return self.responds(request) if callable(self.responds) else self.responds

    async def retrieve(self, request: Any) -> Any:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.context


class FakeApprovalPolicy(ApprovalPolicy):
    """A policy voting with a fixed :class:`Verdict` or one computed from the action."""

    def __init__(
        self,
        name: str = "fake_policy",
        *,
        verdict: Verdict | Callable[[Any], Verdict] = Verdict(Vote.ABSTAIN, "fake policy"),
        description: str = "A fake approval policy for tests.",
    ) -> None:
        self.name = name
        self.description = description
        self.verdict = verdict
        self.actions: list[Any] = []

    def evaluate(self, action: Any) -> Verdict:
        self.actions.append(action)
        return self.verdict if isinstance(self.verdict, Verdict) else self.verdict(action)
