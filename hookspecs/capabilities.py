"""Capabilities: the steps a plan is made of (read channels, run Python, respond, ...)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from osprey_core.hookspecs import hookspec

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import RenderableType

    from osprey_core.approvals import Ruling
    from osprey_core.control.system import ControlSystem
    from osprey_core.hookspecs.archivers import ArchiverConnector
    from osprey_core.providers import ProviderService


@dataclass(frozen=True, slots=True)
class PreparedAction:
    """The exact operation a step will perform, as shown to (and approved by) a human.

    ``artifact`` must be JSON data; its sha256 binds the approval, and ``execute`` receives
    the approved artifact back unchanged, so what runs is what was approved.
    """

    artifact: dict[str, Any]
    summary: str


@dataclass(frozen=True, slots=True)
class StepContext:
    """Everything a capability sees when it prepares or runs one plan step."""

    run_id: str
    index: int
    query: str
    user: str
    session: str
    #: The step parameters, validated by the capability's ``parameters`` model if it has one.
    parameters: Any
    #: Values of the step's declared inputs (request context or earlier step outputs).
    inputs: Mapping[str, Any] = field(default_factory=dict)
    #: The approved (or, without approval, the prepared) artifact; ``None`` before prepare.
    artifact: Mapping[str, Any] | None = None
    #: Services the core offers capabilities: ``step.services.control_system`` and so on.
    services: StepServices = field(default_factory=lambda: StepServices.offering())
    #: The approval the artifact was approved under (``None``: it ran without one).
    approval_id: str | None = None
    #: The interface the run was submitted through (``cli``, ``api``, ...), for the audit.
    interface: str = ""


@dataclass(frozen=True, slots=True)
class CapabilityInfo:
    """A read-only description of a registered capability, fixed when plugins are loaded.

    The approval engine judges steps on these traits, not on the live capability objects,
    so nothing a step does at run time can make another capability look read-only.
    """

    name: str
    description: str
    side_effects: bool
    runs_code: bool
    terminal: bool
    editable: bool
    approval_kind: str
    own_data_only: bool = False

    @classmethod
    def of(cls, capability: Capability) -> CapabilityInfo:
        return cls(capability.name, capability.description, bool(capability.side_effects),
                   bool(capability.runs_code), bool(capability.terminal),
                   bool(capability.editable), str(capability.approval_kind),
                   bool(capability.own_data_only))


class StepServices(Mapping[str, Any]):
    """What the core offers a capability while it prepares or runs one step.

    Read them as typed attributes (``step.services.control_system``). Deliberately narrow:
    a private copy of the configuration, read-only views of the plugin registries, and
    the run's own audit and policy questions. The plugin host is not among them, so a
    step cannot change which plugins or approval policies exist. The control system,
    archiver, provider service and configuration copy are made on first use.

    Reading by name (``services["config"]``) is kept for plugins written before the
    attributes existed; new code should use the attributes, which type checkers see.
    """

    __slots__ = ("_lazy", "_ready")
    _ready: dict[str, Any]
    _lazy: dict[str, Callable[[], Any]]

    def __init__(self, *, config: Callable[[], Any], plugins: Any,
                 capabilities: tuple[CapabilityInfo, ...],
                 audit: Callable[[str, dict[str, Any]], None],
                 rule: Callable[[dict[str, Any]], Ruling],
                 control_system: Callable[[], ControlSystem],
                 archiver: Callable[[], ArchiverConnector],
                 providers: Callable[[], ProviderService]) -> None:
        object.__setattr__(self, "_ready", {
            "plugins": plugins, "capabilities": capabilities, "audit": audit, "rule": rule})
        object.__setattr__(self, "_lazy", {
            "config": config, "control_system": control_system, "archiver": archiver,
            "providers": providers})

    @classmethod
    def offering(cls, **services: Any) -> StepServices:
        """Only the given services, ready-made (``StepServices.offering(control_system=cs)``):
        for running a capability outside a run, in tests or a facility's own harness."""
        offered = cls.__new__(cls)
        object.__setattr__(offered, "_ready", dict(services))
        object.__setattr__(offered, "_lazy", {})
        return offered

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("step services are read-only")

    # config and plugins stay Any: their classes (OspreyConfig, PluginView) live in modules
    # that import this one, so naming them here would close an import cycle.

    @property
    def config(self) -> Any:
        """A private copy of the configuration (``OspreyConfig``): changing it changes
        nothing else."""
        return self["config"]

    @property
    def plugins(self) -> Any:
        """Read-only registries (``PluginView``: code generators, execution backends,
        data providers, embedding models, logbook adapters)."""
        return self["plugins"]

    @property
    def capabilities(self) -> tuple[CapabilityInfo, ...]:
        """What every registered capability is (for a planner-like step)."""
        infos: tuple[CapabilityInfo, ...] = self["capabilities"]
        return infos

    def audit(self, what: str, details: dict[str, Any]) -> None:
        """Add an entry to the run's audit log (code runs, broker decisions, ...)."""
        self["audit"](what, details)

    def rule(self, artifact: dict[str, Any]) -> Ruling:
        """What the approval policies say about another artifact for this same step."""
        ruling: Ruling = self["rule"](artifact)
        return ruling

    @property
    def control_system(self) -> ControlSystem:
        """The control system, with limits, write verification and audit in front."""
        control: ControlSystem = self["control_system"]
        return control

    @property
    def archiver(self) -> ArchiverConnector:
        archiver: ArchiverConnector = self["archiver"]
        return archiver

    @property
    def providers(self) -> ProviderService:
        """Ask specific data providers mid-run (``await providers.gather(only=[...])``)."""
        providers: ProviderService = self["providers"]
        return providers

    def __getitem__(self, name: str) -> Any:
        if name not in self._ready:
            if name not in self._lazy:
                raise KeyError(f"step services offer no {name!r} here "
                               f"(offered: {', '.join(sorted(self)) or 'none'})")
            self._ready[name] = self._lazy[name]()
        return self._ready[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._lazy, **self._ready})

    def __len__(self) -> int:
        return len({**self._lazy, **self._ready})


class Capability(ABC):
    """One thing the agent can do as a plan step.

    The planner sees ``name``, ``description`` and the parameter model; the orchestrator
    uses ``provides``/``requires`` to check the data flow between steps and asks the
    approval policies about every step before it runs.
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
    #: True if it runs generated code (``approval.mode: all_code`` asks for these too).
    runs_code: ClassVar[bool] = False
    #: True for steps that answer the user (respond, clarify): only allowed last in a plan.
    terminal: ClassVar[bool] = False
    #: Approval kind shown to operators (``channel_write``, ``memory_save``, ...).
    approval_kind: ClassVar[str] = "step"
    #: True if its side effects stay in the requesting user's own data (their memory), never
    #: the machine or anyone else's: separation of duties then lets them approve it.
    own_data_only: ClassVar[bool] = False

    def match(self, query: str) -> dict[str, Any] | None:
        """Parameters if this capability handles ``query`` on its own, else ``None``.

        The offline planner (no LLM configured) builds plans from these matches, so simple
        phrasings work without a language model.
        """
        return None

    #: True if an operator may edit the pending artifact (``osprey approvals edit``).
    editable: ClassVar[bool] = False

    def approval_mode(self, config: Any) -> str | None:
        """The approval mode this capability's own settings ask for (the memory plugin's
        ``memory.approve_saves: false`` gives ``disabled``); ``None``: the configured mode.
        An ``approval.capabilities`` entry naming the capability always wins."""
        return None

    async def prepare(self, step: StepContext) -> PreparedAction:
        """Describe exactly what ``execute`` will do; side-effecting capabilities override
        this to show the operator current values, limits and the like."""
        return PreparedAction(
            artifact={"capability": self.name, "parameters": _plain(step.parameters)},
            summary=f"{self.name} with {_plain(step.parameters)}",
        )

    async def revise(self, step: StepContext, edited: dict[str, Any]) -> PreparedAction:
        """Validate an operator's edit of the pending artifact and return the new action,
        which is analysed and approved again. Only called when ``editable`` is true."""
        raise NotImplementedError(f"'{self.name}' artifacts cannot be edited")

    @abstractmethod
    async def execute(self, step: StepContext) -> Any:
        """Run one step and return its JSON-serialisable result."""

    def render(self, result: Any) -> RenderableType | str:
        """This step's result for a person at a terminal: plain text or a rich renderable
        (a table of channel values, a summary of a long series, ...).

        ``result`` is the result as stored with the run (JSON data: what ``execute``
        returned, serialised). Display only: ``--json`` and the API keep the result itself.
        Import rich inside the method, never at module top, so ``osprey --help`` stays
        fast. The default lays mappings and lists out as indented text and summarises long
        series (count, span, min/mean/max, first and last); it never prints JSON.
        """
        from osprey_core.display.text import plain_text

        return plain_text(result)


def _plain(parameters: Any) -> Any:
    return parameters.model_dump(mode="json") if hasattr(parameters, "model_dump") else parameters


@hookspec
def register_capabilities(register: Callable[[Capability], None]) -> None:
    """Register capability instances by calling ``register(capability)`` for each."""
