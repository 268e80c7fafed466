"""A capability can declare a data provider's context type as an input.

The real ``user_memory`` and ``logbook`` providers gather before planning; a capability that
``requires`` their context types gets a validated plan and reads each block's data as the
step input of that name. Without the block, the plan is refused naming the missing context.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from osprey_core.api import Osprey
from osprey_core.config import load_config
from osprey_core.hookspecs.capabilities import Capability, StepContext
from osprey_core.hookspecs.data_providers import ContextBlock
from osprey_core.logbook.service import Logbook
from osprey_core.logbook.sources import ingest_sources
from osprey_core.memory.store import MemoryStore
from osprey_core.plugin_host import PluginHost, load_plugins
from osprey_core.providers import context_by_type
from osprey_core.run_machine import RunState
from osprey_core.settings import MemorySettings
from osprey_core.testing.fakes import FakeEmbeddingModel, fake_plugin

ENTRIES = [
    {"id": 1, "timestamp": "2025-03-01T08:00:00+00:00", "author": "Ana", "logbook": "Ops",
     "title": "RF cavity 2 tripped", "text": "RF cavity 2 tripped on a vacuum spike."},
    {"id": 2, "timestamp": "2025-03-02T09:00:00+00:00", "author": "Bo", "logbook": "Ops",
     "title": "Orbit feedback", "text": "Orbit feedback restarted after an IOC reboot."},
]


class ShiftBrief(Capability):
    """Summarises what the providers gathered: it reads their context types as inputs."""

    name = "shift_brief"
    description = "Brief the operator on the RF cavity from memory and the logbook."
    requires = ("user_memory", "logbook_entries")

    def match(self, query: str) -> dict[str, Any] | None:
        return {} if "brief" in query else None

    async def execute(self, step: StepContext) -> Any:
        return {key: step.inputs[key] for key in self.requires}


@pytest.fixture
def osprey(tmp_path: Path) -> Osprey:
    source = tmp_path / "ops.jsonl"
    source.write_text("".join(json.dumps(entry) + "\n" for entry in ENTRIES), encoding="utf-8")
    host: PluginHost = load_plugins(environ={"OSPREY_STRICT_PLUGINS": "1"})
    host.register(fake_plugin(name="facility", capabilities=[ShiftBrief()],
                              embedding_models=[FakeEmbeddingModel.named("fake_embedding")]))
    path = tmp_path / "osprey.yml"
    path.write_text(json.dumps({"home": "home", "logbook": {
        "provider": True, "embeddings": {"model": "fake_embedding"},
        "sources": {"ops": {"adapter": "jsonl", "location": str(source)}}}}), encoding="utf-8")
    config = load_config(host, path, environ={})
    with Logbook.from_config(config, host) as logbook:
        [outcome] = ingest_sources(logbook, config, host)
        assert outcome.error is None, outcome
    MemoryStore(tmp_path / "home", MemorySettings()).add("ana", "RF cavity 2 trips when the "
                                                         "vacuum rises: check the gauges")
    return Osprey(host=host, config=config)


@pytest.mark.exercises_hook("register_data_providers")
def test_a_step_reads_the_gathered_blocks_named_by_their_context_types(
    osprey: Osprey,
) -> None:
    with osprey:
        run = osprey.run("brief me on the RF cavity trips", user="ana")
    assert run.state is RunState.DONE, run.error
    assert run.plan is not None
    [brief] = [step for step in run.plan.steps if step.capability == "shift_brief"]
    assert sorted(brief.inputs) == ["logbook_entries", "user_memory"]
    result = run.context[brief.output]
    assert result["user_memory"]["provider"] == "user_memory"
    assert "vacuum rises" in result["user_memory"]["items"][0]["text"]
    assert result["logbook_entries"]["provider"] == "logbook"
    assert result["logbook_entries"]["items"][0]["title"] == "RF cavity 2 tripped"


def test_without_the_block_the_plan_is_refused_naming_the_missing_context(
    osprey: Osprey,
) -> None:
    with osprey:
        run = osprey.run("brief me on the orbit", user="bob")  # bob has no memories
    assert run.state is RunState.FAILED
    assert "requires context 'user_memory'" in (run.error or "")


def test_blocks_of_one_type_from_two_providers_become_one_input() -> None:
    first = ContextBlock("logbook_entries", "Ops", [{"id": 1}], provider="ops")
    second = ContextBlock("logbook_entries", "RF", [{"id": 2}], provider="rf")
    memory = ContextBlock("user_memory", "Memories", [{"id": "mem-1"}], provider="user_memory")
    assert context_by_type([first, memory, second]) == {
        "logbook_entries": {"provider": "ops; rf", "context_type": "logbook_entries",
                            "title": "Ops; RF", "items": [{"id": 1}, {"id": 2}]},
        "user_memory": memory.to_json()}
