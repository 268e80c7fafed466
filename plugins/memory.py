"""Built-in plugin: persistent user memory as a data provider and two capabilities.

* ``user_memory`` (provider): the few memories relevant to the request (BM25, top-k),
  labelled as quoted user data, never every memory;
* ``memory_save``: side-effecting, so it stops for approval (the artifact is exactly the
  user and text that will be saved; operators may edit it), then saves the approved text;
* ``memory_recall``: read-only, returns the memories relevant to a topic.

The logic lives in :mod:`osprey_core.memory.capabilities`, imported when the
capabilities are built, so loading the plugin for ``osprey --help`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.capabilities import Capability, PreparedAction, StepContext
from osprey_core.hookspecs.data_providers import ContextBlock, DataProvider, ProviderRequest
from osprey_core.threads import in_thread

if TYPE_CHECKING:
    from rich.console import RenderableType


class MemoryProvider(DataProvider):
    name = "user_memory"
    context_type = "user_memory"

    def should_respond(self, request: ProviderRequest) -> bool:
        from osprey_core.memory.capabilities import provider_responds

        return provider_responds(request)

    async def retrieve(self, request: ProviderRequest) -> ContextBlock | None:
        from osprey_core.memory.capabilities import provider_block

        # File reads and ranking off the event loop: other providers run meanwhile.
        return await in_thread(provider_block, request)


class MemorySave(Capability):
    name = "memory_save"
    description = ("Remember something for this user across sessions, e.g. 'remember that my "
                   "default BPM set is BPM01-BPM04'. A human approves the exact text first.")
    side_effects = True
    approval_kind = "memory_save"
    own_data_only = True  # a user's own memory
    editable = True

    def __init__(self) -> None:
        from osprey_core.memory import capabilities

        self.logic = capabilities
        self.parameters = capabilities.SaveParameters

    def match(self, query: str) -> dict[str, Any] | None:
        return self.logic.match_save(query)

    def approval_mode(self, config: Any) -> str | None:
        return None if config.section("memory").approve_saves else "disabled"

    async def prepare(self, step: StepContext) -> PreparedAction:
        return self.logic.prepare_save(step)

    async def revise(self, step: StepContext, edited: dict[str, Any]) -> PreparedAction:
        return self.logic.save_action(self.logic.store_for(step.services.config),
                                      step.user, edited)

    async def execute(self, step: StepContext) -> dict[str, Any]:
        return await in_thread(self.logic.execute_save, step)

    def render(self, result: Any) -> RenderableType | str:
        from osprey_core.display.records import memory_saved

        return memory_saved(result)


class MemoryRecall(Capability):
    name = "memory_recall"
    description = ("Recall what this user asked to be remembered earlier (saved memories "
                   "relevant to a topic): 'what do you remember about BPMs'.")
    provides = ("user_memory",)

    def __init__(self) -> None:
        from osprey_core.memory import capabilities

        self.logic = capabilities
        self.parameters = capabilities.RecallParameters

    def match(self, query: str) -> dict[str, Any] | None:
        return self.logic.match_recall(query)

    async def execute(self, step: StepContext) -> dict[str, Any]:
        return await in_thread(self.logic.recall, step.services.config, step.user,
                                       step.parameters.topic)

    def render(self, result: Any) -> RenderableType | str:
        from osprey_core.display.records import memories

        return memories(result)


@hookimpl
def register_data_providers(register: Callable[[DataProvider], None]) -> None:
    register(MemoryProvider())


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(MemorySave())
    register(MemoryRecall())
