"""Capabilities: the steps a plan is made of (read channels, run Python, respond, ...)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from osprey_core.hookspecs import hookspec

if TYPE_CHECKING:
    from pydantic import BaseModel


class Capability(ABC):
    """One thing the agent can do as a plan step.

    The planner sees ``name``, ``description`` and the parameter model; the orchestrator
    uses ``provides``/``requires`` to check the data flow between steps and routes every
    capability with ``side_effects`` through the approval engine before it runs.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    #: Context types this capability adds to the run (e.g. ``"channel_values"``).
    provides: ClassVar[tuple[str, ...]] = ()
    #: Context types that must exist (from the request or an earlier step) before it runs.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Pydantic model the step parameters are validated against (``None``: no parameters).
    parameters: ClassVar[type[BaseModel] | None] = None
    #: True if running it can change the machine or stored state: it then needs approval.
    side_effects: ClassVar[bool] = False

    @abstractmethod
    async def execute(self, step: Any) -> Any:
        """Run one step; ``step`` carries the validated parameters and the run context."""


@hookspec
def register_capabilities(register: Callable[[Capability], None]) -> None:
    """Register capability instances by calling ``register(capability)`` for each."""
